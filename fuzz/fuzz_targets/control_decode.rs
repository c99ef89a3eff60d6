//! Feeds arbitrary bytes to the MessagePack decoder of every control message, and of the byte
//! payload type users put in their messages (`Binary`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbus_core::wire::body::decode_body;
use meshbus_core::wire::control::{
    Credit, Goodbye, GossipMessage, Hello, Interest, Reject, Welcome,
};
use meshbus_core::Binary;

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<Hello>(data);
    let _ = decode_body::<Welcome>(data);
    let _ = decode_body::<Reject>(data);
    let _ = decode_body::<Goodbye>(data);
    let _ = decode_body::<Interest>(data);
    let _ = decode_body::<GossipMessage>(data);
    let _ = decode_body::<Credit>(data);
    let _ = decode_body::<Binary>(data);
});
