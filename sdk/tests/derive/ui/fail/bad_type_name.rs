#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", type_name = "shop.OrderPlaced")]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", type_name = "shop.Order Shipped.v1")]
pub struct OrderShipped {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

fn main() {}
