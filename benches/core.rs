//! Micro-benchmarks of the pure cores on the hot path: record encoding and
//! decoding, DVV update and merge, request parsing.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use dynokv::resp::frame::{Parsed, RequestParser};
use dynokv::storage::record::{Record, Sibling, decode_record, encode_record};
use dynokv::version::VersionVector;
use std::hint::black_box;

fn record_with(siblings: u64) -> Record {
    let mut record = Record::new();
    for node in 1..=siblings {
        record.update(
            &VersionVector::new(),
            node,
            Sibling::value(Bytes::from(vec![b'x'; 100]), node),
        );
    }
    record
}

fn records(c: &mut Criterion) {
    let one = record_with(1);
    let bytes = encode_record(&one);
    c.bench_function("record encode (1 sibling, 100 B)", |b| {
        b.iter(|| encode_record(black_box(&one)))
    });
    c.bench_function("record decode (1 sibling, 100 B)", |b| {
        b.iter(|| decode_record(black_box(&bytes)))
    });
    let three = record_with(3);
    c.bench_function("dvv sync (3 siblings each side)", |b| {
        b.iter(|| {
            let mut left = one.clone();
            left.sync(black_box(&three));
            left
        })
    });
    c.bench_function("dvv update superseding context", |b| {
        b.iter(|| {
            let mut record = three.clone();
            let context = record.context().clone();
            record.update(&context, 1, Sibling::value(Bytes::from_static(b"v"), 9));
            record
        })
    });
}

fn parsing(c: &mut Criterion) {
    let request = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000012345\r\n$3\r\nxyz\r\n".repeat(16);
    c.bench_function("parse 16 pipelined SETs", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&request[..]);
            let mut parser = RequestParser::new(1 << 20);
            let mut n = 0;
            while let Parsed::Command(_) = parser.next(&mut buf, true) {
                n += 1;
            }
            n
        })
    });
}

criterion_group!(benches, records, parsing);
criterion_main!(benches);
