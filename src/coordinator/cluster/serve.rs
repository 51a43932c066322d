//! The peer request handler: what this node does for requests from
//! other nodes (reads and replications batched into one store job each,
//! the rest concurrently), with the [`Response`] each gets.

use super::handoff::serve_fetch;
use super::{ClusterCoordinator, Inner};
use crate::coordinator::{BoxFuture, CoordinatorError, OpError};
use crate::limits::{DETECTOR_PROBE_PING_MS, PEER_BATCH_BYTES_MAX, PEER_LIST_LEN_MAX};
use crate::model::record::decode_record_shared;
use crate::peer::message::{DbCount, ErrorCode, Request, Response};
use crate::peer::transport::Handler;
use crate::replica::Received;
use crate::storage::StoreError;
use crate::version::NodeId;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// A failure as the requesting node receives it.
pub(in crate::coordinator) fn error_response(error: &CoordinatorError) -> Response {
    let code = match error {
        CoordinatorError::Storage(StoreError::Unwritable { .. }) => ErrorCode::Unwritable,
        CoordinatorError::Storage(_) | CoordinatorError::Remote(_) => ErrorCode::Storage,
        CoordinatorError::QuorumFailed { .. } | CoordinatorError::RemoteQuorumFailed(_) => {
            ErrorCode::Quorum
        }
        CoordinatorError::Layout(_) | CoordinatorError::UnknownMember(_) => ErrorCode::BadRequest,
        CoordinatorError::ShuttingDown => ErrorCode::ShuttingDown,
        CoordinatorError::Rejected(OpError::NotAnInteger) => ErrorCode::NotAnInteger,
        CoordinatorError::Rejected(OpError::Overflow) => ErrorCode::Overflow,
        CoordinatorError::Rejected(OpError::TooLarge) => ErrorCode::TooLarge,
        CoordinatorError::Rejected(OpError::WatchedKeyChanged) => ErrorCode::WatchedKeyChanged,
    };
    Response::Error {
        code,
        message: error.to_string(),
    }
}

/// Replicated records as received, decoded: a request with a record that
/// does not decode is refused whole, as a bad request.
pub(super) fn decode_entries(entries: Vec<(Bytes, Bytes)>) -> Result<Vec<Received>, Response> {
    entries
        .into_iter()
        .map(|(key, bytes)| match decode_record_shared(&bytes) {
            Ok(record) => Ok(Received {
                key,
                record,
                encoded: Some(bytes),
            }),
            Err(e) => Err(Response::Error {
                code: ErrorCode::BadRequest,
                message: format!("a replicated record does not decode: {e}"),
            }),
        })
        .collect()
}

impl Inner {
    /// Answers Read requests, each a list of keys, with one local read
    /// for all of them, records as stored (not decoded and encoded
    /// again). Each answer stops short once its records pass
    /// [`PEER_BATCH_BYTES_MAX`] bytes (the coordinator asks for the rest).
    async fn answer_reads(&self, reads: Vec<Vec<Bytes>>) -> Vec<Response> {
        let counts: Vec<usize> = reads.iter().map(Vec::len).collect();
        let keys = reads.into_iter().flatten().collect();
        match self.local.read_encoded(keys).await {
            Ok(records) => {
                let mut records = records.into_iter();
                counts
                    .into_iter()
                    .map(|n| {
                        let mut size = 0;
                        let mut answer: Vec<_> = records.by_ref().take(n).collect();
                        let past = answer.iter().position(|record| {
                            size += record.as_ref().map_or(1, Bytes::len);
                            size >= PEER_BATCH_BYTES_MAX
                        });
                        if let Some(last) = past {
                            answer.truncate(last + 1);
                        }
                        Response::Records { records: answer }
                    })
                    .collect()
            }
            Err(e) => {
                let e = CoordinatorError::from(e);
                counts.iter().map(|_| error_response(&e)).collect()
            }
        }
    }

    /// Serves one peer request.
    async fn serve(self: Arc<Self>, from: NodeId, request: Request) -> Response {
        let inner = self;
        let result = match request {
            Request::Ping => Ok(Response::Pong),
            Request::Read { keys } => inner
                .answer_reads(vec![keys])
                .await
                .pop()
                .ok_or_else(|| CoordinatorError::Remote("no answer".into())),
            Request::Replicate { entries } => match decode_entries(entries) {
                Ok(batch) => inner
                    .local
                    .merge_many(batch)
                    .await
                    .map(|()| Response::Ack)
                    .map_err(CoordinatorError::from),
                Err(refused) => return refused,
            },
            Request::Coordinate { key, op, w, pw } => {
                let given = |n: u8| (n > 0).then_some(usize::from(n));
                let acks = super::Acks {
                    w: given(w),
                    pw: given(pw),
                };
                Arc::clone(&inner)
                    .coordinate(vec![(key, op)], acks)
                    .await
                    .and_then(|mut written| {
                        written
                            .pop()
                            .unwrap_or_else(|| Err(CoordinatorError::Remote("no outcome".into())))
                    })
                    .map(|written| Response::Written {
                        previous: written.previous.map(Box::new),
                        current: written.current.map(Box::new),
                    })
            }
            Request::Scan {
                partition,
                after,
                limit,
            } => inner
                .local
                .scan_partition(partition, after, (limit as usize).min(PEER_LIST_LEN_MAX))
                .await
                .map(|entries| Response::Entries { entries })
                .map_err(CoordinatorError::from),
            Request::Flush { db } => inner.flush_here(db).await.map(|()| Response::Ack),
            Request::Count { partitions } => inner
                .local
                .count(partitions)
                .await
                .map(|c| Response::Count {
                    dbs: (0u8..)
                        .zip(c.dbs)
                        .filter(|(_, n)| n.keys > 0)
                        .map(|(db, n)| DbCount {
                            db,
                            keys: n.keys,
                            expires: n.expires,
                        })
                        .collect(),
                })
                .map_err(CoordinatorError::from),
            Request::Gossip(gossip) => Ok(Response::Gossip(inner.membership.answer(from, &gossip))),
            Request::Fetch {
                partition,
                after,
                limit,
            } => serve_fetch(&inner.handoff, &inner.local, partition, after, limit).await,
            Request::Held { partitions } => inner
                .local
                .held(partitions)
                .await
                .map(|partitions| Response::Held { partitions })
                .map_err(CoordinatorError::from),
            Request::Hint { target, entries } => match decode_entries(entries) {
                Ok(batch) => inner.keep_hints(target, batch).await,
                Err(refused) => return refused,
            },
            Request::Roots { partitions } => Ok(Response::Hashes {
                hashes: inner.local.replica().tree_roots(&partitions),
            }),
            Request::Segments { partition } => Ok(Response::Hashes {
                hashes: inner.local.replica().tree_segments(partition),
            }),
            Request::Leaves {
                partition,
                segments,
            } => inner
                .local
                .tree_leaves(partition, segments)
                .await
                .map(|leaves| Response::Leaves { leaves })
                .map_err(CoordinatorError::from),
            Request::Reap { entries } => inner.reap_here(entries).await,
            Request::Probe { target } => {
                // Pinged on its link even if this node marked it down:
                // the question is whether it answers now.
                let ping = Duration::from_millis(DETECTOR_PROBE_PING_MS);
                let alive = target == inner.me()
                    || matches!(
                        inner
                            .transport
                            .request_up_to(target, Request::Ping, ping)
                            .await,
                        Ok(Response::Pong)
                    );
                Ok(Response::Probed { alive })
            }
        };
        result.unwrap_or_else(|e| error_response(&e))
    }
}

impl Handler for ClusterCoordinator {
    fn handle(&self, from: NodeId, requests: Vec<Request>) -> BoxFuture<'_, Vec<Response>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let mut responses: Vec<Option<Response>> = (0..requests.len()).map(|_| None).collect();
            // Reads and replications are batched into one store job each;
            // the rest run concurrently.
            let (mut reads, mut merges, mut flushes) = (Vec::new(), Vec::new(), Vec::new());
            let mut others = JoinSet::new();
            for (i, request) in requests.into_iter().enumerate() {
                match request {
                    Request::Read { keys } => reads.push((i, keys)),
                    Request::Replicate { entries } => merges.push((i, entries)),
                    // After the batch's merges: a copy sent before the
                    // flush must not land after it.
                    flush @ Request::Flush { .. } => flushes.push((i, flush)),
                    other => {
                        let inner = Arc::clone(&inner);
                        others.spawn(async move { (i, inner.serve(from, other).await) });
                    }
                }
            }
            if !reads.is_empty() {
                let (index, keys): (Vec<usize>, Vec<_>) = reads.into_iter().unzip();
                let answers = inner.answer_reads(keys).await;
                for (i, answer) in index.into_iter().zip(answers) {
                    responses[i] = Some(answer);
                }
            }
            let (mut index, mut batch) = (Vec::new(), Vec::new());
            for (i, entries) in merges {
                match decode_entries(entries) {
                    Ok(records) => {
                        index.push(i);
                        batch.extend(records);
                    }
                    Err(refused) => responses[i] = Some(refused),
                }
            }
            if !index.is_empty() {
                let response = match inner.local.merge_many(batch).await {
                    Ok(()) => Response::Ack,
                    Err(e) => error_response(&e.into()),
                };
                index
                    .into_iter()
                    .for_each(|i| responses[i] = Some(response.clone()));
            }
            for (i, flush) in flushes {
                responses[i] = Some(Arc::clone(&inner).serve(from, flush).await);
            }
            while let Some(joined) = others.join_next().await {
                if let Ok((i, response)) = joined {
                    responses[i] = Some(response);
                }
            }
            responses
                .into_iter()
                .map(|r| r.unwrap_or_else(|| error_response(&CoordinatorError::ShuttingDown)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{encode_record, sample};

    // Proves replicated records are decoded as received, and one that
    // does not decode refuses the whole request as a bad request.
    #[test]
    fn replicated_records_decode_or_refuse_the_request() {
        let good = (
            Bytes::from_static(b"k"),
            Bytes::from(encode_record(&sample())),
        );
        let decoded = decode_entries(vec![good.clone()]).expect("decodes");
        assert_eq!(
            decoded,
            vec![Received {
                key: good.0.clone(),
                record: sample(),
                encoded: Some(good.1.clone()),
            }]
        );
        let junk = (Bytes::from_static(b"j"), Bytes::from_static(b"\xffjunk"));
        match decode_entries(vec![good, junk]) {
            Err(Response::Error { code, message }) => {
                assert_eq!(code, ErrorCode::BadRequest);
                assert!(message.contains("does not decode"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
