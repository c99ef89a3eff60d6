//! A small order service on four nodes over TCP on loopback, in one process.
//!
//! ```sh
//! cargo run --example order_service
//! ```
//!
//! It exits by itself within a few seconds. Every node listens on `tcp://127.0.0.1:0` and joins
//! through the first one's address; gossip does the rest.
//!
//! | node | cluster | handles | injected services |
//! |---|---|---|---|
//! | `frontend` | `shop` | `Health` | |
//! | `orders` | `shop` | `PlaceOrder` (reply: the order id), `Health` | `Prices`, `OrderIds` |
//! | `warehouse` | `shop` | `Reserve` (no reply), `StockLevel`, `Health`; subscribes to `OrderPlaced` | `Stock` |
//! | `audit` | `ops` | `Record` (no reply), `AuditTrail`, `Health` | `AuditLog` |
//!
//! Placing an order is a chain across nodes: `frontend` sends `PlaceOrder` to `orders`, whose
//! handler reserves stock at `warehouse` (a command without a reply: it returns once handled,
//! or with the warehouse's error), records it at `audit` (in another cluster, so in the
//! `Network` scope), and publishes `OrderPlaced`; the warehouse ships it and publishes
//! `OrderShipped`, which `frontend` waits for. Handlers are structs built in `start()` from the
//! services they need (`from_services`); a missing service would make `start()` fail.

mod support;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::BusBuilder;
use serde::{Deserialize, Serialize};

// ----- messages -----

/// Places an order; the reply is its id.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "orders.place", reply = u64)]
struct PlaceOrder {
    sku: String,
    quantity: u32,
}

/// Takes `quantity` of `sku` out of stock, or fails. No reply: `Ok(())` once done.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "warehouse.reserve")]
struct Reserve {
    sku: String,
    quantity: u32,
}

/// How many of `sku` are left.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "warehouse.stock-level", reply = u32)]
struct StockLevel {
    sku: String,
}

/// Appends a line to the audit log. No reply.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "audit.record")]
struct Record {
    line: String,
}

/// The audit log so far.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "audit.trail", reply = Vec<String>)]
struct AuditTrail;

/// Every node answers with its name.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "ops.health", reply = String)]
struct Health;

/// An order was placed (published by `orders`, in its cluster).
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "orders.placed")]
struct OrderPlaced {
    order_id: u64,
    sku: String,
    quantity: u32,
    total_cents: u64,
}

/// An order left the warehouse.
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "warehouse.shipped")]
struct OrderShipped {
    order_id: u64,
}

// ----- services -----

/// Unit prices in cents.
struct Prices(HashMap<String, u64>);

/// The next order id.
#[derive(Default)]
struct OrderIds(AtomicU64);

/// Units in stock per SKU.
struct Stock(Mutex<HashMap<String, u32>>);

/// The audit log.
#[derive(Default)]
struct AuditLog(Mutex<Vec<String>>);

// ----- handlers -----

struct PlaceOrderHandler {
    prices: Arc<Prices>,
    ids: Arc<OrderIds>,
}

#[async_trait]
impl CommandHandler<PlaceOrder> for PlaceOrderHandler {
    async fn handle(&self, cmd: PlaceOrder, ctx: Context) -> Result<u64, HandlerError> {
        let unit = *self
            .prices
            .0
            .get(&cmd.sku)
            .ok_or_else(|| HandlerError::msg(format!("we do not sell {}", cmd.sku)))?;
        let bus = ctx.bus();
        // A command to another node, from inside a handler; its error fails this order.
        bus.commands()
            .send(Reserve {
                sku: cmd.sku.clone(),
                quantity: cmd.quantity,
            })
            .await?;
        let order_id = self.ids.0.fetch_add(1, Ordering::Relaxed) + 1;
        let total_cents = unit * u64::from(cmd.quantity);
        // audit is in another cluster: only the Network scope reaches it.
        bus.commands()
            .network()
            .send(Record {
                line: format!("order {order_id}: {} x {}", cmd.quantity, cmd.sku),
            })
            .await?;
        bus.events()
            .publish(OrderPlaced {
                order_id,
                sku: cmd.sku,
                quantity: cmd.quantity,
                total_cents,
            })
            .await?;
        Ok(order_id)
    }
}

/// The warehouse's commands: one struct, built from the `Stock` service, handles two.
struct StockHandler {
    stock: Arc<Stock>,
}

#[async_trait]
impl CommandHandler<Reserve> for StockHandler {
    async fn handle(&self, cmd: Reserve, _ctx: Context) -> Result<(), HandlerError> {
        let mut stock = self
            .stock
            .0
            .lock()
            .map_err(|_| HandlerError::msg("stock poisoned"))?;
        let left = stock.get(&cmd.sku).copied().unwrap_or(0);
        if left < cmd.quantity {
            return Err(HandlerError::msg(format!(
                "only {left} of {} left, {} wanted",
                cmd.sku, cmd.quantity
            )));
        }
        stock.insert(cmd.sku.clone(), left - cmd.quantity);
        println!(
            "  [warehouse] reserved {} x {} ({} left)",
            cmd.quantity,
            cmd.sku,
            left - cmd.quantity
        );
        Ok(())
    }
}

#[async_trait]
impl CommandHandler<StockLevel> for StockHandler {
    async fn handle(&self, cmd: StockLevel, _ctx: Context) -> Result<u32, HandlerError> {
        let stock = self
            .stock
            .0
            .lock()
            .map_err(|_| HandlerError::msg("poisoned"))?;
        Ok(stock.get(&cmd.sku).copied().unwrap_or(0))
    }
}

/// The audit node's commands.
struct AuditHandler {
    log: Arc<AuditLog>,
}

#[async_trait]
impl CommandHandler<Record> for AuditHandler {
    async fn handle(&self, cmd: Record, _ctx: Context) -> Result<(), HandlerError> {
        println!("  [audit] {}", cmd.line);
        let mut log = self
            .log
            .0
            .lock()
            .map_err(|_| HandlerError::msg("poisoned"))?;
        log.push(cmd.line);
        Ok(())
    }
}

#[async_trait]
impl CommandHandler<AuditTrail> for AuditHandler {
    async fn handle(&self, _: AuditTrail, _ctx: Context) -> Result<Vec<String>, HandlerError> {
        let log = self
            .log
            .0
            .lock()
            .map_err(|_| HandlerError::msg("poisoned"))?;
        Ok(log.clone())
    }
}

/// Answers `Health` with the node's name.
async fn health(_: Health, ctx: Context) -> Result<String, HandlerError> {
    Ok(format!("{} ok", ctx.bus().name()))
}

// ----- the nodes -----

fn node(name: &str, cluster: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .cluster(cluster)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
        .command_handler(health)
}

async fn start_orders() -> Result<Bus, Error> {
    let prices = HashMap::from([("book".to_owned(), 1250), ("pen".to_owned(), 199)]);
    node("orders", "shop")
        .service(Prices(prices))
        .service(OrderIds::default())
        .command_handler(from_services(|s| {
            Ok(PlaceOrderHandler {
                prices: s.get()?,
                ids: s.get()?,
            })
        }))
        .start()
        .await
}

async fn start_warehouse(seed: &str) -> Result<Bus, Error> {
    let stock = HashMap::from([("book".to_owned(), 10), ("pen".to_owned(), 100)]);
    node("warehouse", "shop")
        .peers([seed])
        .service(Stock(Mutex::new(stock)))
        // Each factory runs in start(), with the services registered above.
        .command_handler::<Reserve, _, _>(from_services(|s| Ok(StockHandler { stock: s.get()? })))
        .command_handler::<StockLevel, _, _>(from_services(|s| {
            Ok(StockHandler { stock: s.get()? })
        }))
        .event_handler(ship)
        .start()
        .await
}

/// The warehouse ships every order placed, and says so.
async fn ship(e: Arc<OrderPlaced>, ctx: Context) -> Result<(), HandlerError> {
    println!(
        "  [warehouse] shipping order {} ({} x {}, {}.{:02} EUR)",
        e.order_id,
        e.quantity,
        e.sku,
        e.total_cents / 100,
        e.total_cents % 100
    );
    ctx.bus()
        .events()
        .publish(OrderShipped {
            order_id: e.order_id,
        })
        .await?;
    Ok(())
}

async fn start_audit(seed: &str) -> Result<Bus, Error> {
    node("audit", "ops")
        .peers([seed])
        .service(AuditLog::default())
        .command_handler::<Record, _, _>(from_services(|s| Ok(AuditHandler { log: s.get()? })))
        .command_handler::<AuditTrail, _, _>(from_services(|s| Ok(AuditHandler { log: s.get()? })))
        .start()
        .await
}

/// Waits for `what`, at most 10 s.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("gave up waiting 10 s for {what}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    support::init_logging();
    let orders = start_orders().await?;
    let seed = orders.listen_addrs()[0].to_string();
    let warehouse = start_warehouse(&seed).await?;
    let audit = start_audit(&seed).await?;
    let frontend = node("frontend", "shop").peers([&seed]).start().await?;
    let mut shipped = frontend.subscribe::<OrderShipped>()?;

    within("the mesh", async {
        frontend.ready().handlers::<Health>(Scope::Network, 4).await;
        frontend
            .ready()
            .handlers::<PlaceOrder>(Scope::Cluster, 1)
            .await;
        orders.ready().handlers::<Reserve>(Scope::Cluster, 1).await;
        orders.ready().handlers::<Record>(Scope::Network, 1).await;
        orders
            .ready()
            .subscribers::<OrderPlaced>(Scope::Cluster, 1)
            .await;
        warehouse
            .ready()
            .subscribers::<OrderShipped>(Scope::Cluster, 1)
            .await;
    })
    .await?;
    println!("four nodes up on {seed} and friends");

    // Scopes: who answers `Health`.
    let me = frontend.commands().local().send(Health).await?;
    println!("Local:   {me}");
    for scope in [Scope::Cluster, Scope::Machine, Scope::Network] {
        let mut answers: Vec<String> = frontend
            .commands()
            .scope(scope)
            .send_all(Health)
            .timeout(Duration::from_secs(5))
            .stream()
            .filter_map(|(_, reply)| async move { reply.ok() })
            .collect()
            .await;
        answers.sort();
        println!("{scope:<8} {answers:?}");
    }

    // An order that goes through: orders -> warehouse, audit; OrderPlaced -> OrderShipped.
    let order_id = frontend
        .commands()
        .send(PlaceOrder {
            sku: "book".into(),
            quantity: 2,
        })
        .await?;
    println!("placed order {order_id}");
    let ship = within("OrderShipped", shipped.recv()).await?;
    let ship = ship.ok_or("the subscription ended")?;
    println!("order {} shipped", ship.order_id);

    // One the warehouse refuses: its error comes back through orders to us.
    let refused = frontend
        .commands()
        .send(PlaceOrder {
            sku: "book".into(),
            quantity: 100,
        })
        .await;
    match refused {
        Err(e) if e.kind() == ErrorKind::HandlerFailed => println!("refused: {e}"),
        Err(e) => return Err(e.into()),
        Ok(id) => return Err(format!("order {id} should have been refused").into()),
    }
    let books = frontend
        .commands()
        .send(StockLevel { sku: "book".into() })
        .await?;
    println!("books left: {books}");

    // audit is in cluster `ops`: the Network scope reaches it, our own cluster does not.
    let trail = frontend.commands().network().send(AuditTrail).await?;
    println!("audit trail: {trail:?}");
    match frontend.commands().cluster().send(AuditTrail).await {
        Err(e) if e.kind() == ErrorKind::NoHandler => println!("in our cluster: {e}"),
        other => return Err(format!("expected NoHandler, got {:?}", other.err()).into()),
    }

    drop(shipped);
    for bus in [&frontend, &orders, &warehouse, &audit] {
        bus.shutdown().await?;
    }
    println!("all four shut down");
    Ok(())
}
