#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(key = "order_id", type_name = "shop.OrderPlaced.v1")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders")]
pub struct OrderShipped {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(key = "order_id")]
pub struct OrderPaid {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

fn main() {}
