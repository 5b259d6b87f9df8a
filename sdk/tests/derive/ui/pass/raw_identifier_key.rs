use sidestream::Event;

// A proto field named `type` becomes `r#type`; `key` names it as the proto does.
#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "audit", key = "type", type_name = "ops.AuditEntry.v1")]
pub struct AuditEntry {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
}

fn main() {
    assert_eq!(AuditEntry { r#type: -3 }.key().unwrap().as_bytes(), b"-3");
}
