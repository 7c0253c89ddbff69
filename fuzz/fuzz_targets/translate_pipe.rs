//! `translate::StreamPipe` in every mode — both pass-throughs and a translation for each
//! upstream × client pair — on arbitrary bytes cut into two chunks. The checks are
//! `common::check_relay`'s.
#![no_main]

mod common;

use common::{all_modes, check_relay, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    for mode in all_modes() {
        check_relay(mode, &input);
    }
});
