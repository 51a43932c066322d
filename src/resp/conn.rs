//! One client connection: read what the client sent, execute every complete
//! command in order, send all the replies with one write.

use super::command::execute_next;
use super::frame::{Parsed, RequestParser};
use super::monitor::Subscription;
use super::reply::Reply;
use super::session::{ClientInfo, Session};
use super::shared::Shared;
use crate::limits::{PIPELINE_BATCH_COMMANDS_MAX, READ_BUFFER_BYTES, REPLY_BUFFER_BYTES_MAX};
use crate::net::{Connection, ReadHalf, WriteHalf};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Serves one client until it leaves, breaks the protocol, is killed, or
/// the node shuts down (after finishing the commands it already sent).
pub async fn serve_connection(shared: Arc<Shared>, connection: Connection) {
    let Connection {
        mut reader,
        mut writer,
        local,
        remote,
    } = connection;
    let info = Arc::new(ClientInfo::new(shared.next_client_id(), remote, local));
    shared
        .clients
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(info.id, Arc::clone(&info));
    let config = shared.config();
    let mut session = Session::new(Arc::clone(&info), config.requirepass.is_some());
    if let Err(e) = run(
        &shared,
        &mut session,
        (&mut reader, &mut writer),
        config.proto_max_bulk_len,
    )
    .await
    {
        tracing::debug!(client = info.id, "connection ended: {e}");
    }
    shared
        .clients
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&info.id);
}

async fn run(
    shared: &Shared,
    session: &mut Session,
    (reader, writer): (&mut ReadHalf, &mut WriteHalf),
    bulk_bytes_max: usize,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut output = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut parser = RequestParser::new(bulk_bytes_max);
    let mut shutdown = shared.shutdown();
    let info = Arc::clone(&session.info);
    let mut last_read = Instant::now();
    let mut timeout_secs = shared.idle_timeout_secs.subscribe();
    loop {
        // Execute every complete command already received, in order.
        let mut broken = None;
        let mut commands = VecDeque::new();
        while commands.len() < PIPELINE_BATCH_COMMANDS_MAX {
            match parser.next(&mut input, session.authenticated) {
                Parsed::Incomplete => break,
                Parsed::Command(args) => commands.push_back(args),
                Parsed::Error(text) => {
                    broken = Some(text);
                    break;
                }
            }
            // Before AUTH the parser applies tighter limits; parse the
            // next request only once this one ran.
            if !session.authenticated {
                break;
            }
        }
        // A full batch (or one cut short before AUTH) may leave complete
        // commands in the buffer.
        let more = commands.len() >= PIPELINE_BATCH_COMMANDS_MAX
            || (!commands.is_empty() && broken.is_none() && !session.authenticated);
        while !commands.is_empty() {
            if shared.pause.active() && !output.is_empty() {
                send(shared, writer, &mut output, session.monitor.as_ref()).await?;
            }
            // Lines of commands that ran before this one go out before its reply.
            if !take_monitor_lines(session, &mut output) {
                return Ok(());
            }
            for reply in execute_next(shared, session, &mut commands).await {
                count_errors(shared, &reply);
                if session.take_reply_wanted() {
                    reply.encode(session.protocol, &mut output);
                }
            }
            if session.closing {
                return send(shared, writer, &mut output, session.monitor.as_ref()).await;
            }
            if output.len() >= REPLY_BUFFER_BYTES_MAX {
                send(shared, writer, &mut output, session.monitor.as_ref()).await?;
            }
        }
        if let Some(text) = broken {
            let reply = Reply::Error(text);
            count_errors(shared, &reply);
            reply.encode(session.protocol, &mut output);
            return send(shared, writer, &mut output, session.monitor.as_ref()).await;
        }
        if more {
            continue;
        }
        if !take_monitor_lines(session, &mut output) {
            return Ok(());
        }
        send(shared, writer, &mut output, session.monitor.as_ref()).await?;
        info.update(|s| s.query_buffer = input.len());
        if *shutdown.borrow() || info.killed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if input.capacity() - input.len() < READ_BUFFER_BYTES / 4 {
            input.reserve(READ_BUFFER_BYTES);
        }
        tokio::select! {
            biased;
            read = reader.read_buf(&mut input) => match read? {
                0 => return Ok(()),
                n => {
                    shared.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            () = crate::task::stopped(&mut shutdown) => return Ok(()),
            () = info.wake.notified() => {}
            () = monitor_ready(session.monitor.as_ref()) => {}
            () = idle_expired(&mut timeout_secs, last_read), if session.monitor.is_none() => {
                tracing::debug!(client = info.id, "closing an idle client (timeout)");
                return Ok(());
            }
        }
        last_read = Instant::now();
    }
}

/// Moves the MONITOR lines waiting for this connection, if it monitors,
/// into `output`; false when it fell too far behind and must close (see
/// [`super::monitor`]).
///
/// While CLIENT REPLY OFF or SKIP holds its replies the lines are dropped,
/// as Redis drops them. Redis decides when it feeds a line, we when we
/// take it: the same lines but for two of the monitor's own, the line of
/// its CLIENT REPLY SKIP (which Redis shows) and that of the command after
/// it (which Redis drops).
fn take_monitor_lines(session: &Session, output: &mut BytesMut) -> bool {
    let Some(monitor) = &session.monitor else {
        return true;
    };
    let taken = if session.reply_off || session.reply_skip_this {
        monitor.discard_lines()
    } else {
        monitor.take_lines(output)
    };
    match taken {
        Ok(()) => true,
        Err(lagged) => {
            tracing::info!(
                client = session.info.id,
                "closing a MONITOR client: {lagged}"
            );
            false
        }
    }
}

/// Returns when a monitoring connection may have lines to send; never
/// for any other.
async fn monitor_ready(monitor: Option<&Subscription>) {
    match monitor {
        Some(monitor) => monitor.ready().await,
        None => std::future::pending().await,
    }
}

/// Counts the error replies in `reply` for INFO: the reply itself, or the
/// replies of EXEC's commands (the only arrays that carry errors).
fn count_errors(shared: &Shared, reply: &Reply) {
    match reply {
        Reply::Error(text) => shared.stats.record_error(text),
        Reply::Raw(raw) if raw.first() == Some(&b'-') => {
            shared
                .stats
                .record_error(&String::from_utf8_lossy(&raw[1..]));
        }
        Reply::Array(items) => items.iter().for_each(|r| count_errors(shared, r)),
        _ => {}
    }
}

/// Returns once the client has been idle (nothing read since `last_read`)
/// for CONFIG `timeout` seconds; never while the timeout is 0. Follows
/// CONFIG SET while it waits.
async fn idle_expired(timeout_secs: &mut watch::Receiver<u64>, last_read: Instant) {
    loop {
        let secs = *timeout_secs.borrow_and_update();
        if secs == 0 {
            if timeout_secs.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            continue;
        }
        let deadline = tokio::time::Instant::from_std(last_read) + Duration::from_secs(secs);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            changed = timeout_secs.changed() => {
                if changed.is_err() {
                    // The server is gone; the shutdown branch ends the wait.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Writes `output` to the client. A monitor's write is given up when it
/// lags past its bound (its client may never read again).
async fn send(
    shared: &Shared,
    writer: &mut WriteHalf,
    output: &mut BytesMut,
    monitor: Option<&Subscription>,
) -> std::io::Result<()> {
    if output.is_empty() {
        return Ok(());
    }
    match monitor {
        None => writer.write_all(output).await?,
        Some(monitor) => tokio::select! {
            written = writer.write_all(output) => written?,
            lagged = monitor.lagged() => return Err(std::io::Error::other(lagged)),
        },
    }
    shared
        .stats
        .net_output_bytes
        .fetch_add(output.len() as u64, Ordering::Relaxed);
    output.clear();
    Ok(())
}
