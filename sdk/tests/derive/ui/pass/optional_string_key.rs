use sidestream::Event;

#[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
#[event(topic = "users", key = "tenant", type_name = "iam.UserSeen.v1")]
pub struct UserSeen {
    #[prost(string, optional, tag = "1")]
    pub tenant: ::core::option::Option<::prost::alloc::string::String>,
}

fn main() {
    assert!(UserSeen::default().key().is_none());
}
