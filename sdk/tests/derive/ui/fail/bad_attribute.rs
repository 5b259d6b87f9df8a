#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", type_name = "shop.OrderPlaced.v1", partitions = "4")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = orders, type_name = "shop.OrderShipped.v1")]
pub struct OrderShipped {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", type_name = "shop.OrderPaid.v1", key = 1)]
pub struct OrderPaid {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

fn main() {}
