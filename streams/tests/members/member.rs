//! What a member child does: joins consumer `billing`, handles records one at a time, prints
//! a line per record handled and per ack answered, and acks after printing, as its
//! [`Role`] says.

use futures_util::StreamExt;
use meshbus_core::{Bus, Scope};
use meshbus_streams::{Consumer, StreamRecord, StreamsExt};
use tokio::sync::mpsc;

use super::{node, within, Item, Role, ACK_WAIT, APPEND, BOUND, CONSUMER, MARK, MAX_DELIVERIES};

/// Records a member asks for at once, but for a gated member before its `go`.
pub(crate) const BATCH: u32 = 20;
/// Records the killed member acks before it holds the next ones.
pub(crate) const ACK_LIMIT: u64 = 3_000;
/// Records the killed member handles without acking, then it waits to be killed.
pub(crate) const HOLD: u64 = 15;
/// Records the gated member handles (one pull each) before it waits for `go`.
pub(crate) const BUDGET: u64 = 1_000;

fn say(line: &str) {
    println!("{MARK}{line}");
}

/// Joins the consumer with the test's configuration (every member the same, so joining
/// changes nothing), asking for `batch` records at a time.
async fn join(bus: &Bus, batch: u32) -> Consumer<StreamRecord<Item>> {
    within(
        "joining the consumer",
        BOUND,
        bus.streams()
            .consumer::<Item>("orders", CONSUMER)
            .ack_wait(ACK_WAIT)
            .max_deliveries(MAX_DELIVERIES)
            .batch(batch),
    )
    .await
    .expect("joining the consumer")
}

/// The lines of this process's stdin; the channel closes at its end.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        // Bounded by the input: ends at its end.
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            if tx.send(line.trim().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    rx
}

/// The member's life: until its stdin closes (or it is killed).
///
/// - [`Role::Plain`]: handles and acks every record, [`BATCH`] at a time.
/// - [`Role::Killed`]: the same for its first [`ACK_LIMIT`] records; the next [`HOLD`] it
///   handles without acking, then prints `holding` and waits. It then holds at least
///   [`HOLD`] delivered, unacked records (and perhaps more, delivered and not yet handled).
/// - [`Role::Gated`]: handles and acks its first [`BUDGET`] records one pull each (so it
///   holds none when it stops), prints `paused`, waits for a `go` line, then goes on as
///   `Plain`. Until then the killed member is sure to find the records it needs.
pub(crate) async fn run(seed: String, role: Role) {
    let bus = node(&format!("member-{}", std::process::id()))
        .peers([seed])
        .start()
        .await
        .expect("the member starts");
    within(
        "the host",
        BOUND,
        bus.ready().handlers_named(APPEND, Scope::Network, 1),
    )
    .await;
    let mut input = stdin_lines();
    let mut go = false;
    let gated = role == Role::Gated;
    let mut member = join(&bus, if gated { 1 } else { BATCH }).await;
    say("ready");
    let mut handled = 0u64;
    let mut paused = false;
    loop {
        if gated && !paused && handled == BUDGET {
            paused = true;
            // Its buffer is empty (one record a pull) and no pull is under way.
            drop(member);
            say("paused");
            while !go {
                match input.recv().await {
                    Some(line) => go |= line == "go",
                    None => {
                        bus.shutdown().await.expect("the member shuts down");
                        say("stopped");
                        return;
                    }
                }
            }
            member = join(&bus, BATCH).await;
        }
        let message = tokio::select! {
            line = input.recv() => match line {
                Some(line) => {
                    go |= line == "go";
                    continue;
                }
                None => break,
            },
            message = member.next() => message,
        };
        let Some(message) = message else { break };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                say(&format!("pull-error {e}"));
                continue;
            }
        };
        let offset = message.offset();
        say(&format!(
            "handled {offset} {} {}",
            message.deliveries, message.record.value.id
        ));
        handled += 1;
        if role == Role::Killed && handled > ACK_LIMIT {
            if handled == ACK_LIMIT + HOLD {
                say("holding");
                // Until killed (or, should the test fail first, until its stdin closes).
                while input.recv().await.is_some() {}
                break;
            }
            continue;
        }
        match message.ack().await {
            Ok(()) => say(&format!("acked {offset}")),
            Err(e) => say(&format!("refused {offset} {e}")),
        }
    }
    drop(member);
    bus.shutdown().await.expect("the member shuts down");
    say("stopped");
}
