use sidestream::Event;

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", key = "order_id", type_name = "shop.OrderNumbered.v1")]
pub struct OrderNumbered {
    #[prost(uint64, tag = "1")]
    pub order_id: u64,
}

fn main() {
    assert_eq!(OrderNumbered { order_id: 42 }.key().unwrap().as_bytes(), b"42");
}
