#[derive(Clone, Copy, PartialEq, Eq, prost::Enumeration, sidestream::Event)]
#[event(topic = "orders", type_name = "shop.OrderStatus.v1")]
pub enum OrderStatus {
    Placed = 0,
    Shipped = 1,
}

fn main() {}
