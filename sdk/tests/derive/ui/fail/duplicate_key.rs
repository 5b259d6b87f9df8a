#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", key = "order_id", key = "customer", type_name = "shop.OrderPlaced.v1")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: String,
    #[prost(string, tag = "2")]
    pub customer: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", type_name = "shop.OrderShipped.v1")]
#[event(topic = "shipments")]
pub struct OrderShipped {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

fn main() {}
