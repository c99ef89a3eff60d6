//! The quickstart: three nodes of a real mesh on loopback TCP, with typed commands and events.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It exits by itself within a few seconds. No multicast and no fixed ports: `orders` listens
//! on `tcp://127.0.0.1:0` (the system picks a port), and `billing` and `web` are given the
//! address it got as their one static peer; gossip does the rest. `orders` and `web` are in the
//! cluster `shop`, `billing` in `finance`:
//!
//! - `orders` handles `PlaceOrder` (a reply, or a handler error) and `CancelOrder` (no reply),
//!   with an id generator injected as a service, and publishes `OrderPlaced` to the network;
//! - `billing` subscribes to `OrderPlaced`, answers `Charge` and publishes `InvoiceSent`;
//! - `web` sends the commands, in the `Local`, `Cluster` and `Network` scopes, and subscribes
//!   to both events at run time.

mod support;

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use serde::{Deserialize, Serialize};

/// A command with a typed reply: the new order's id.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "shop.place-order", reply = u64)]
struct PlaceOrder {
    sku: String,
    quantity: u32,
}

/// A command without a reply: the caller still waits until it has been handled.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "shop.cancel-order")]
struct CancelOrder {
    order_id: u64,
}

/// Answered by `billing`, which is in another cluster: only the `Network` scope reaches it.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "finance.charge", reply = String)]
struct Charge {
    order_id: u64,
    cents: u64,
}

/// Answered by whoever sends it: `web` handles it itself, in the `Local` scope.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "web.greet", reply = String)]
struct Greet(String);

/// An event every subscriber gets a copy of.
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "shop.order-placed")]
struct OrderPlaced {
    order_id: u64,
    sku: String,
}

/// Published by `billing`'s event handler once it has seen an order.
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "finance.invoice-sent")]
struct InvoiceSent {
    order_id: u64,
}

/// A shared service, injected into the handler that needs it.
#[derive(Default)]
struct OrderIds(AtomicU64);

struct PlaceOrderHandler {
    ids: Arc<OrderIds>,
}

#[async_trait]
impl CommandHandler<PlaceOrder> for PlaceOrderHandler {
    async fn handle(&self, cmd: PlaceOrder, ctx: Context) -> Result<u64, HandlerError> {
        if cmd.quantity == 0 {
            return Err(HandlerError::msg("quantity must be at least 1"));
        }
        let order_id = self.ids.0.fetch_add(1, Ordering::Relaxed) + 1;
        println!(
            "  [orders]  placing order {order_id}: {} x {}",
            cmd.quantity, cmd.sku
        );
        // Billing is in another cluster: publish to the whole network.
        ctx.bus()
            .events()
            .network()
            .publish(OrderPlaced {
                order_id,
                sku: cmd.sku,
            })
            .await?;
        Ok(order_id)
    }
}

/// `orders` cancels: a command without a reply.
async fn cancel_order(cmd: CancelOrder, _ctx: Context) -> Result<(), HandlerError> {
    println!("  [orders]  cancelling order {}", cmd.order_id);
    Ok(())
}

/// `billing` charges: a command answered across clusters.
async fn charge(cmd: Charge, _ctx: Context) -> Result<String, HandlerError> {
    println!(
        "  [billing] charging {} cents for order {}",
        cmd.cents, cmd.order_id
    );
    Ok(format!("receipt-{}", cmd.order_id))
}

/// `billing` invoices every order placed. A handler may return any error that converts into
/// `HandlerError`: this one returns the nested publish's `Error` as it is.
async fn send_invoice(e: Arc<OrderPlaced>, ctx: Context) -> Result<(), Error> {
    println!("  [billing] invoice for order {} ({})", e.order_id, e.sku);
    ctx.bus()
        .events()
        .network()
        .publish(InvoiceSent {
            order_id: e.order_id,
        })
        .await
}

/// A node of the demo: its own name and cluster, TCP on a port the system picks.
fn node(name: &str, cluster: &str) -> meshbus::BusBuilder {
    Bus::builder()
        .name(name)
        .cluster(cluster)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    support::init_logging();
    let orders = node("orders", "shop")
        .service(OrderIds::default())
        .command_handler(from_services(|s| Ok(PlaceOrderHandler { ids: s.get()? })))
        .command_handler(cancel_order)
        .start()
        .await?;
    // The address `orders` got, e.g. tcp://127.0.0.1:41234: the others' one static peer.
    let seed = &orders.listen_addrs()[0];
    println!("orders listens on {seed}");

    let billing = node("billing", "finance")
        .peers(seed)
        .command_handler(charge)
        .event_handler(send_invoice)
        .start()
        .await?;
    let web = node("web", "shop")
        .peers(seed)
        // A closure that captures nothing may be an async closure with a return type.
        .command_handler(
            async |g: Greet, _ctx: Context| -> Result<String, HandlerError> {
                Ok(format!("hello, {}", g.0))
            },
        )
        .start()
        .await?;
    // Run-time subscriptions: Streams that unsubscribe when dropped.
    let mut placed = web.subscribe::<OrderPlaced>()?;
    let mut invoiced = web.subscribe::<InvoiceSent>()?;

    // No sleeps: wait until the mesh can carry what follows, with a bound.
    let ready = async {
        web.ready().handlers::<PlaceOrder>(Scope::Cluster, 1).await;
        web.ready().handlers::<Charge>(Scope::Network, 1).await;
        orders
            .ready()
            .subscribers::<OrderPlaced>(Scope::Network, 2)
            .await;
        billing
            .ready()
            .subscribers::<InvoiceSent>(Scope::Network, 1)
            .await;
    };
    within("the mesh to form", ready).await?;
    println!("mesh ready: orders, billing and web are connected over TCP");

    // Local: web's own handler; nothing is serialized.
    let greeting = web.commands().local().send(Greet("web".into())).await?;
    println!("local command answered: {greeting}");

    // Cluster (the default scope): orders answers with a typed reply.
    let order_id = web
        .commands()
        .cluster()
        .send(PlaceOrder {
            sku: "book".into(),
            quantity: 2,
        })
        .timeout(Duration::from_secs(5))
        .await?;
    println!("placed order {order_id}");
    let event = within("OrderPlaced", placed.recv())
        .await?
        .ok_or("the subscription ended")?;
    println!("web saw OrderPlaced for order {}", event.order_id);
    let invoice = within("InvoiceSent", invoiced.recv())
        .await?
        .ok_or("the subscription ended")?;
    println!("web saw InvoiceSent for order {}", invoice.order_id);

    // A handler's error comes back to the caller with its message.
    let refused = web
        .commands()
        .send(PlaceOrder {
            sku: "pen".into(),
            quantity: 0,
        })
        .await;
    match refused {
        Err(e) if e.kind() == ErrorKind::HandlerFailed => println!("order refused: {e}"),
        other => return Err(unexpected("a refused order", other)),
    }

    // Network: billing is in another cluster.
    let receipt = web
        .commands()
        .network()
        .send(Charge {
            order_id,
            cents: 1999,
        })
        .await?;
    println!("charged over the network: {receipt}");
    // The same command in the Cluster scope finds no handler, at once.
    match web
        .commands()
        .cluster()
        .send(Charge { order_id, cents: 1 })
        .await
    {
        Err(e) if e.kind() == ErrorKind::NoHandler => println!("not in our cluster: {e}"),
        other => return Err(unexpected("NoHandler", other)),
    }

    // No reply: Ok(()) once orders has handled it.
    web.commands()
        .send(CancelOrder { order_id })
        .idempotency_key(format!("cancel-{order_id}"))
        .await?;
    println!("cancelled order {order_id}");

    drop((placed, invoiced));
    // Each says goodbye, so the others drop it at once.
    for bus in [&web, &billing, &orders] {
        bus.shutdown().await?;
        println!("{} shut down", bus.name());
    }
    println!("done");
    Ok(())
}

/// Waits for `what`, at most 10 s: a demo that cannot go on says so instead of hanging.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("gave up waiting 10 s for {what}"))
}

/// The error for a result the demo did not expect.
fn unexpected<T>(wanted: &str, got: Result<T, Error>) -> Box<dyn StdError> {
    match got {
        Ok(_) => format!("expected {wanted}, got a success").into(),
        Err(e) => format!("expected {wanted}, got: {e}").into(),
    }
}
