// A crate that re-exports the SDK (here as `crate::sdk`) names it with `crate = "…"`, and
// `#[event]` may be split over several attributes.
pub(crate) use ::sidestream as sdk;

use sdk::Event as _;

#[derive(Clone, PartialEq, prost::Message, sdk::Event)]
#[event(crate = "crate::sdk", topic = "blobs", key = "digest")]
#[event(type_name = "store.BlobAdded.v1")]
pub struct BlobAdded {
    #[prost(bytes = "bytes", tag = "1")]
    pub digest: ::prost::bytes::Bytes,
}

fn main() {
    let blob = BlobAdded {
        digest: ::prost::bytes::Bytes::from_static(b"\x00\x01"),
    };
    assert_eq!(blob.key().unwrap().as_bytes(), [0, 1]);
    assert_eq!(<BlobAdded as sdk::Event>::TYPE_NAME, "store.BlobAdded.v1");
}
