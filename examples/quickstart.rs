//! The quickstart: a service with injected dependencies, typed commands and events.
//!
//! `cargo run --example quickstart`
//!
//! Today it runs one node; once the mesh transports land (issues 5 and 6) it becomes three
//! nodes on loopback TCP with the same handler code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
            "  [handler] placing order {order_id}: {} x {}",
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
    let bus = Bus::builder()
        .name("quickstart")
        .cluster("shop")
        .service(OrderIds::default())
        .command_handler_with(|s| Ok(PlaceOrderHandler { ids: s.get()? }))
        .command_handler(|cmd: CancelOrder, _ctx| async move {
            println!("  [handler] cancelling order {}", cmd.order_id);
            Ok(())
        })
        .event_handler(|e: Arc<OrderPlaced>, _ctx: Context| async move {
            println!("  [billing] invoice for order {} ({})", e.order_id, e.sku);
            Ok(())
        })
        .start()
        .await?;
    println!("node {} ({}) started", bus.name(), bus.node_id());

    // A run-time subscription: a Stream that unsubscribes when dropped.
    let mut placed = bus.subscribe::<OrderPlaced>()?;

    let order_id = bus
        .commands()
        .local()
        .send(PlaceOrder {
            sku: "book".into(),
            quantity: 2,
        })
        .timeout(Duration::from_secs(5))
        .await?;
    println!("placed order {order_id}");
    let seen = placed.recv().await;
    println!("subscriber saw {seen:?}");

    match bus
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

    bus.commands()
        .send(CancelOrder { order_id })
        .idempotency_key(format!("cancel-{order_id}"))
        .await?;
    println!("cancelled order {order_id}");

    #[derive(Serialize, Deserialize, Command)]
    struct Unhandled;
    let err = bus.commands().send(Unhandled).await.unwrap_err();
    println!("as expected: {err}");

    drop(placed);
    bus.shutdown().await?;
    println!("shut down cleanly");
    Ok(())
}
