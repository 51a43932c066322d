//! Micro-benchmarks of the hot path: record encoding and decoding, DVV
//! update and merge, request parsing, and one fjall write (the floor under
//! every replica's write: a SET on a 3-replica cluster pays it three times).

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use dynokv::model::record::{Record, Sibling, decode_record, encode_record};
use dynokv::resp::frame::{Parsed, RequestParser};
use dynokv::storage::{BatchOp, FjallStore, Space, Store, storage_key};
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

/// `FjallStore::apply` of records the size `redis-benchmark -d 100` writes,
/// over its 100,000 keys in random order, one per batch (a lone SET) and
/// 16 per batch (a combined storage job). Past the first memtable the
/// skiplist holds several versions of most keys, as under a long run.
fn store(c: &mut Criterion) {
    #[expect(clippy::expect_used, reason = "a bench without its store cannot run")]
    let dir = tempfile::tempdir().expect("temp dir");
    #[expect(clippy::expect_used, reason = "a bench without its store cannot run")]
    let store = FjallStore::open(dir.path()).expect("open fjall");
    let record = encode_record(&record_with(1));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next_key = move || {
        // xorshift64: the same key order every run
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = x % 100_000;
        storage_key((k % 1024) as u16, format!("key:{k:012}").as_bytes())
    };
    for batch in [1, 16] {
        c.bench_function(
            &format!("fjall apply ({batch} x 100 B record per batch)"),
            |b| {
                b.iter(|| {
                    let ops: Vec<BatchOp> = (0..batch)
                        .map(|_| BatchOp::put(Space::Data, next_key(), record.clone()))
                        .collect();
                    store.apply(&ops)
                })
            },
        );
    }
}

criterion_group!(benches, records, parsing, store);
criterion_main!(benches);
