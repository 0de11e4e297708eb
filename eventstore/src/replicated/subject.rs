//! Stream ids as NATS subject tokens, safely and reversibly.
//!
//! A stream id may hold any character but control characters (see [`StreamId`]): dots,
//! `*`, `>` and spaces among them, each of which would split or widen a subject. A token
//! keeps ASCII letters, digits, `-` and `_` as they are (so `order-42` stays `order-42`,
//! readable in `nats` tools) and writes every other byte of the UTF-8 text as `=XX`
//! (upper-case hex), `=` itself included. Decoding is the exact inverse, and refuses
//! anything an encoding could not have produced.

use crate::ids::StreamId;

/// The subject token of `stream`.
pub fn encode(stream: &StreamId) -> String {
    let text = stream.as_str();
    let mut token = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(byte as char);
        } else {
            token.push('=');
            token.push(char::from(HEX[usize::from(byte >> 4)]));
            token.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
    token
}

/// The stream id a token encodes, or `None` if no stream id encodes to it.
pub fn decode(token: &str) -> Option<StreamId> {
    let bytes = token.as_bytes();
    let mut text = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'=' {
            let high = hex_value(*bytes.get(i + 1)?)?;
            let low = hex_value(*bytes.get(i + 2)?)?;
            let decoded = high << 4 | low;
            // A byte the encoding keeps as it is was not written as `=XX`.
            if decoded.is_ascii_alphanumeric() || decoded == b'-' || decoded == b'_' {
                return None;
            }
            text.push(decoded);
            i += 3;
        } else if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            text.push(byte);
            i += 1;
        } else {
            return None;
        }
    }
    StreamId::new(String::from_utf8(text).ok()?).ok()
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_ids_stay_readable_and_the_rest_is_escaped() {
        let cases = [
            ("order-42", "order-42"),
            ("customer-a_b", "customer-a_b"),
            ("a.b", "a=2Eb"),
            ("x*y>z", "x=2Ay=3Ez"),
            ("two words", "two=20words"),
            ("=", "=3D"),
            ("é", "=C3=A9"),
        ];
        for (id, token) in cases {
            let stream = StreamId::new(id).unwrap();
            assert_eq!(encode(&stream), token, "{id}");
            assert_eq!(decode(token), Some(stream), "{token}");
        }
    }

    #[test]
    fn tokens_no_encoding_makes_are_refused() {
        for token in ["a.b", "a=2", "a=zz", "=61", "a b", "", "=2a", "*", ">"] {
            assert_eq!(decode(token), None, "{token}");
        }
    }

    proptest! {
        #[test]
        fn every_stream_id_round_trips_through_a_safe_token(id in "\\PC{1,40}") {
            prop_assume!(StreamId::new(&id).is_ok());
            let stream = StreamId::new(&id).unwrap();
            let token = encode(&stream);
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='));
            prop_assert!(!token.is_empty());
            prop_assert_eq!(decode(&token), Some(stream));
        }
    }
}
