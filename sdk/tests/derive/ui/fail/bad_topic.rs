#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders/eu", type_name = "shop.OrderPlaced.v1")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "..", type_name = "shop.OrderShipped.v1")]
pub struct OrderShipped {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

fn main() {}
