#[derive(Clone, PartialEq, sidestream::Event)]
#[event(topic = "orders", type_name = "shop.OrderId.v1")]
pub struct OrderId(pub String);

fn main() {}
