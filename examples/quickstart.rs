//! The quickstart: a service with injected dependencies, typed commands and events, on three
//! nodes of an in-memory network.
//!
//! `cargo run --example quickstart`
//!
//! `orders` handles the commands, `billing` subscribes to the event, `web` sends. The same
//! handler code runs on loopback TCP once that transport lands (issue 6): only the transport
//! and the addresses change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;

/// A command with a typed reply.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "shop.place-order", reply = u64)]
struct PlaceOrder {
    sku: String,
    quantity: u32,
}

/// A command whose caller waits until it has been handled.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "shop.cancel-order")]
struct CancelOrder {
    order_id: u64,
}

/// An event every subscriber gets a copy of.
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "shop.order-placed")]
struct OrderPlaced {
    order_id: u64,
    sku: String,
}

/// A shared service, injected into the handler.
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
            "  [orders] placing order {order_id}: {} x {}",
            cmd.quantity, cmd.sku
        );
        ctx.bus()
            .events()
            .publish(OrderPlaced {
                order_id,
                sku: cmd.sku,
            })
            .await?;
        Ok(order_id)
    }
}

#[tokio::main]
async fn main() -> Result<(), meshbus::Error> {
    let net = InMemNetwork::new(7);
    // Every node joins through `orders`; gossip introduces the others.
    let node = |name: &str| {
        Bus::builder()
            .name(name)
            .cluster("shop")
            .transport(net.transport(name))
            .listen(format!("inmem://{name}"))
            .peers(["inmem://orders"])
    };
    let orders = node("orders")
        .service(OrderIds::default())
        .command_handler_with(|s| Ok(PlaceOrderHandler { ids: s.get()? }))
        .command_handler(|cmd: CancelOrder, _ctx| async move {
            println!("  [orders] cancelling order {}", cmd.order_id);
            Ok(())
        })
        .start()
        .await?;
    let billing = node("billing")
        .event_handler(|e: Arc<OrderPlaced>, _ctx: Context| async move {
            println!("  [billing] invoice for order {} ({})", e.order_id, e.sku);
            Ok(())
        })
        .start()
        .await?;
    let web = node("web").start().await?;
    // A run-time subscription: a Stream that unsubscribes when dropped.
    let mut placed = web.subscribe::<OrderPlaced>()?;

    // No sleeps: wait until the mesh can carry what follows.
    let ready = async {
        web.ready().handlers::<PlaceOrder>(Scope::Cluster, 1).await;
        orders
            .ready()
            .subscribers::<OrderPlaced>(Scope::Cluster, 2)
            .await;
    };
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout).with_detail("the mesh did not form"))?;
    println!("three nodes up: orders, billing, web");

    let order_id = web
        .commands()
        .send(PlaceOrder {
            sku: "book".into(),
            quantity: 2,
        })
        .timeout(Duration::from_secs(5))
        .await?;
    println!("placed order {order_id}");
    let seen = placed.recv().await;
    println!("web's subscriber saw {seen:?}");

    match web
        .commands()
        .cluster()
        .send(PlaceOrder {
            sku: "pen".into(),
            quantity: 0,
        })
        .await
    {
        Err(e) if e.kind() == ErrorKind::HandlerFailed => println!("refused as expected: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    web.commands()
        .send(CancelOrder { order_id })
        .idempotency_key(format!("cancel-{order_id}"))
        .await?;
    println!("cancelled order {order_id}");

    #[derive(Serialize, Deserialize, Command)]
    struct Unhandled;
    let err = web.commands().send(Unhandled).await.unwrap_err();
    println!("as expected: {err}");

    drop(placed);
    for bus in [&web, &billing, &orders] {
        bus.shutdown().await?;
    }
    println!("shut down cleanly");
    Ok(())
}
