#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", key = "order_idd", type_name = "shop.OrderPlaced.v1")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: String,
    #[prost(uint64, tag = "2")]
    pub amount_cents: u64,
}

fn main() {}
