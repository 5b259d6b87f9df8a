use sidestream::Event;

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "metrics", type_name = "ops.Tick.v1")]
pub struct Tick {
    #[prost(int64, tag = "1")]
    pub value: i64,
}

fn main() {
    assert!(Tick { value: 1 }.key().is_none());
    assert_eq!(Tick::TOPIC, "metrics");
}
