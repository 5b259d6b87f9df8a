use sidestream::Event;

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: ::prost::alloc::string::String,
    #[prost(uint64, tag = "2")]
    pub amount_cents: u64,
}

fn main() {
    let order = OrderPlaced {
        order_id: "o-1".into(),
        amount_cents: 5,
    };
    assert_eq!(order.key().unwrap().as_bytes(), b"o-1");
}
