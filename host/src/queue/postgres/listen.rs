//! Waking idle agents with `LISTEN`/`NOTIFY` instead of polling.
//!
//! A trigger announces every item that becomes `queued` on its queue's
//! channel (see [`CHANNEL_SQL`]); one connection per agent listens and wakes the agent loop.
//! When the connection drops it is made again with backoff (100 ms
//! doubling to 5 s), and the loop is woken once it is back: an item
//! submitted meanwhile is not announced again, so the loop looks for itself.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema::CHANNEL_SQL;
use super::sql::StoreName;

/// The first wait before connecting again.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before connecting again.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Listens for new work until the runtime ends, waking `waker` at every
/// notification and after every reconnect.
pub async fn listen(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    store: StoreName,
    waker: Arc<Notify>,
) {
    let mut backoff = BACKOFF_FIRST;
    let mut failing = false;
    loop {
        let result = match &tls {
            Some(tls) => {
                listen_once(&config, tls.clone(), &waker, &mut backoff, &mut failing).await
            }
            None => {
                listen_once(
                    &config,
                    tokio_postgres::NoTls,
                    &waker,
                    &mut backoff,
                    &mut failing,
                )
                .await
            }
        };
        if let Err(error) = result {
            if !failing {
                tracing::warn!(
                    "queue database {store}: listening for new work failed ({error}); \
                     reconnecting with backoff, and looking for work every few seconds meanwhile"
                );
            }
            failing = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: connect, `LISTEN`, wake on every notification
/// until the connection ends.
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    waker: &Notify,
    backoff: &mut Duration,
    failing: &mut bool,
) -> Result<(), tokio_postgres::Error>
where
    T: MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    // The client lives to the end: the connection is listened on as long.
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listening = async {
        let channel: String = client.query_one(CHANNEL_SQL, &[]).await?.get(0);
        client.batch_execute(&format!("LISTEN \"{channel}\"")).await
    };
    tokio::pin!(listening);
    // Drive the connection while LISTEN runs.
    loop {
        tokio::select! {
            done = &mut listening => { done?; break; }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => waker.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            }
        }
    }
    if *failing {
        tracing::info!("listening for new work again");
        *failing = false;
    }
    *backoff = BACKOFF_FIRST;
    // Anything submitted while nobody listened is looked for now.
    waker.notify_one();
    while let Some(message) = messages.next().await {
        match message? {
            AsyncMessage::Notification(_) => waker.notify_one(),
            _ => continue,
        }
    }
    Ok(())
}
