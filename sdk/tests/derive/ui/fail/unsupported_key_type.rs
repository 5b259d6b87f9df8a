#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "prices", key = "price", type_name = "shop.PriceSet.v1")]
pub struct PriceSet {
    #[prost(double, tag = "1")]
    pub price: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Customer {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "orders", key = "customer", type_name = "shop.OrderPlaced.v1")]
pub struct OrderPlaced {
    #[prost(message, optional, tag = "1")]
    pub customer: Option<Customer>,
}

fn main() {}
