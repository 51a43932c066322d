//! A coordinator's keys as per-replica batches: one Read or Replicate
//! request per replica per batch of keys, and the answers spread back to
//! the keys. One request per key cost a request id, a waiter, a oneshot
//! and a frame header per key per replica; a pipelined client batch of 16
//! keys now costs one of each per replica.

use super::CoordinatorError;
use super::answers::Answers;
use crate::limits::{PEER_BATCH_BYTES_MAX, PEER_BATCH_KEYS_MAX};
use crate::model::record::{Record, decode_record_shared};
use crate::peer::message::{Request, Response};
use crate::peer::transport::{PeerError, Pending, Transport};
use crate::version::NodeId;
use bytes::Bytes;
use std::sync::Arc;

/// Cuts `items` into batches of at most [`PEER_BATCH_KEYS_MAX`] items and,
/// by `bytes`, about [`PEER_BATCH_BYTES_MAX`]: a batch closes once past it,
/// so each holds at least one item.
pub(super) fn cut<T>(items: Vec<T>, bytes: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for item in items {
        size += bytes(&item);
        batch.push(item);
        if batch.len() == PEER_BATCH_KEYS_MAX || size >= PEER_BATCH_BYTES_MAX {
            batches.push(std::mem::take(&mut batch));
            size = 0;
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// One replica's answer for one key: (key index, replica, record).
pub(super) type KeyRead = (usize, NodeId, Result<Option<Record>, CoordinatorError>);

/// Keys asked of one replica: (key index, key).
type Asked = Vec<(usize, Bytes)>;

/// Reads sent to other replicas, one request per replica per batch, with
/// their answers spread back to the keys.
#[derive(Default)]
pub(super) struct ReadBatches {
    answers: Answers<Pending>,
    /// By answer tag: the replica and the keys asked of it.
    asked: Vec<(NodeId, Asked)>,
}

impl ReadBatches {
    /// Asks `node` for the records of `keys` (at most
    /// [`PEER_BATCH_KEYS_MAX`]); gives them back if the request could not
    /// be sent.
    pub(super) async fn ask(
        &mut self,
        transport: &Arc<Transport>,
        node: NodeId,
        keys: Asked,
    ) -> Result<(), Asked> {
        let request = Request::Read {
            keys: keys.iter().map(|(_, key)| key.clone()).collect(),
        };
        match transport.send(node, request).await {
            Ok(pending) => {
                self.answers.push(self.asked.len(), pending);
                self.asked.push((node, keys));
                Ok(())
            }
            Err(e) => {
                tracing::debug!("read of a replica skipped: {e}");
                Err(keys)
            }
        }
    }

    /// Whether every answer has been taken.
    pub(super) fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The next answer to come in, spread to its keys, or `None` when none
    /// is open. The keys an answer stopped short of are asked again, so
    /// they stay open; if that cannot be sent they fail here.
    pub(super) async fn next(&mut self, transport: &Arc<Transport>) -> Option<Vec<KeyRead>> {
        let (tag, answer) = self.answers.next().await?;
        let (node, keys) = std::mem::take(&mut self.asked[tag]);
        let (mut out, rest) = spread(node, keys, answer);
        if !rest.is_empty()
            && let Err(rest) = self.ask(transport, node, rest).await
        {
            out.extend(
                rest.into_iter()
                    .map(|(i, _)| (i, node, Err(not_sent(node)))),
            );
        }
        Some(out)
    }

    /// The answers already in, spread to their keys, without waiting for
    /// the others. Keys an answer stopped short of fail here (only read
    /// repair looks at these).
    pub(super) fn ready(&mut self) -> Vec<KeyRead> {
        let mut out = Vec::new();
        for (tag, answer) in self.answers.ready() {
            let (node, keys) = std::mem::take(&mut self.asked[tag]);
            let (spread, rest) = spread(node, keys, answer);
            out.extend(spread);
            out.extend(
                rest.into_iter()
                    .map(|(i, _)| (i, node, Err(not_sent(node)))),
            );
        }
        out
    }
}

/// A record as a replica answered it, decoded; one that does not decode
/// fails that replica's answer for its key.
fn decode(record: Option<Bytes>) -> Result<Option<Record>, CoordinatorError> {
    record
        .map(|bytes| decode_record_shared(&bytes))
        .transpose()
        .map_err(|e| CoordinatorError::Remote(format!("a record that does not decode: {e}")))
}

fn not_sent(node: NodeId) -> CoordinatorError {
    CoordinatorError::Remote(format!(
        "the rest of a read could not be sent to node {node:016x}"
    ))
}

/// An answer to a Read spread to the keys asked, and the keys it stopped
/// short of.
fn spread(node: NodeId, keys: Asked, answer: Result<Response, PeerError>) -> (Vec<KeyRead>, Asked) {
    let error = match answer {
        Ok(Response::Records { records }) if !records.is_empty() && records.len() <= keys.len() => {
            let mut keys = keys.into_iter();
            let out = records
                .into_iter()
                .zip(keys.by_ref())
                .map(|(record, (i, _))| (i, node, decode(record)))
                .collect();
            return (out, keys.collect());
        }
        Ok(Response::Records { records }) => format!(
            "{} records answered for {} keys asked",
            records.len(),
            keys.len()
        ),
        Ok(other) => format!("unexpected answer: {other:?}"),
        Err(e) => e.to_string(),
    };
    let out = keys
        .into_iter()
        .map(|(i, _)| (i, node, Err(CoordinatorError::Remote(error.clone()))))
        .collect();
    (out, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::encode_record;

    // Proves batches keep order, close at the key count, close once past
    // the byte budget, and hold an oversized item alone.
    #[test]
    fn cut_bounds_keys_and_bytes() {
        let items: Vec<usize> = (0..PEER_BATCH_KEYS_MAX * 2 + 1).collect();
        let batches = cut(items.clone(), |_| 1);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [PEER_BATCH_KEYS_MAX, PEER_BATCH_KEYS_MAX, 1]
        );
        assert_eq!(batches.concat(), items);

        let half = PEER_BATCH_BYTES_MAX / 2;
        let sizes = vec![half, half, 1, PEER_BATCH_BYTES_MAX * 3, 1];
        let batches = cut(sizes, |&size| size);
        assert_eq!(
            batches,
            vec![vec![half, half], vec![1, PEER_BATCH_BYTES_MAX * 3], vec![1]]
        );
        assert!(cut(Vec::<usize>::new(), |_| 1).is_empty());
    }

    // Proves an answer is spread to its keys in order, a short answer
    // leaves the rest to ask again, and a wrong answer fails every key.
    #[test]
    fn spread_matches_records_to_keys() {
        let keys: Asked = (0..3)
            .map(|i| (i * 10, Bytes::from(vec![i as u8])))
            .collect();
        let record = crate::model::record::sample();
        let records = Response::Records {
            records: vec![None, Some(Bytes::from(encode_record(&record)))],
        };
        let (out, rest) = spread(7, keys.clone(), Ok(records));
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], (0, 7, Ok(None))));
        assert!(matches!(&out[1], (10, 7, Ok(Some(r))) if *r == record));
        assert_eq!(rest, vec![(20, Bytes::from(vec![2]))]);

        // A record that does not decode fails its key alone.
        let records = Response::Records {
            records: vec![Some(Bytes::from_static(b"\xffjunk")), None, None],
        };
        let (out, _) = spread(7, keys.clone(), Ok(records));
        assert!(out[0].2.is_err());
        assert!(matches!(out[1..], [(10, 7, Ok(None)), (20, 7, Ok(None))]));

        for wrong in [
            Response::Records { records: vec![] },
            Response::Records {
                records: vec![None; 4],
            },
            Response::Ack,
        ] {
            let (out, rest) = spread(7, keys.clone(), Ok(wrong));
            assert_eq!(out.len(), 3);
            assert!(out.iter().all(|(_, _, answer)| answer.is_err()));
            assert!(rest.is_empty());
        }
    }
}
