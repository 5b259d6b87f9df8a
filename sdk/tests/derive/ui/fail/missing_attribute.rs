#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
pub struct OrderPlaced {
    #[prost(string, tag = "1")]
    pub order_id: String,
}

fn main() {}
