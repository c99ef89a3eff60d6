//! Network keys, identities, rotation and pinning, on loopback TCP.
//!
//! ```sh
//! cargo run --example trust
//! ```
//!
//! Two nodes share a network key (written to a file, as `openssl rand -base64 32` would); one
//! keeps its static key in an identity file and so its node id across a restart. A node with
//! another key is refused. The key is then rotated across the running nodes without a link
//! dropping, and a pinned node links only with the static key it lists.

mod support;

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::trust::NetworkKey;
use meshbus::ErrorKind;
use serde::{Deserialize, Serialize};

/// Answers the node's name.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "trust.whoami", reply = String)]
struct WhoAmI;

fn node(name: &str) -> meshbus::BusBuilder {
    Bus::builder()
        .name(name)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
        .command_handler(|_: WhoAmI, ctx: Context| async move {
            HandlerResult::Ok(ctx.bus().name().to_owned())
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::init_logging();
    let dir = std::env::temp_dir().join(format!("meshbus-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("network.key");
    std::fs::write(&key_file, NetworkKey::generate().to_base64())?;
    let identity_file = dir.join("alpha.identity");

    let alpha = node("alpha")
        .network_key_file(&key_file)
        .identity_file(&identity_file)
        .start()
        .await?;
    let alpha_addr = alpha.listen_addrs()[0].to_string();
    println!(
        "alpha: node {} with public key {}",
        alpha.node_id(),
        alpha.public_key()
    );
    let beta = node("beta")
        .network_key_file(&key_file)
        .peers([alpha_addr.clone()])
        .start()
        .await?;
    beta.ready().handlers::<WhoAmI>(Scope::Cluster, 2).await;
    let name = beta.commands().remote_only().cluster().send(WhoAmI).await?;
    println!("beta asked over an encrypted link: {name}");

    // Another key: refused at its first handshake message.
    let outsider = node("outsider")
        .network_key(NetworkKey::generate())
        .start()
        .await?;
    let refused = outsider.connect(&alpha_addr).await.expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::Unauthorized);
    println!("outsider: {refused}");
    outsider.shutdown().await?;

    // Rotation: [k1] → [k2, k1] on every node → [k2]. Links stay up.
    let k1 = NetworkKey::from_file(&key_file)?;
    let k2 = NetworkKey::generate();
    for bus in [&alpha, &beta] {
        bus.set_network_keys([k2.clone(), k1.clone()])?;
    }
    for bus in [&alpha, &beta] {
        bus.set_network_keys([k2.clone()])?;
    }
    let name = beta.commands().remote_only().cluster().send(WhoAmI).await?;
    println!("after rotating to k2 the link still answers: {name}");
    let stale = node("stale").network_key(k1).start().await?;
    let refused = stale.connect(&alpha_addr).await.expect_err("refused");
    println!("a node with only the old key: {}", refused.kind());
    stale.shutdown().await?;

    // Pinning: gamma links only with alpha's static key.
    let gamma = node("gamma")
        .network_key(k2.clone())
        .allow_peers([alpha.public_key()])
        .start()
        .await?;
    let reached = gamma.connect(&alpha_addr).await?;
    println!("gamma (pinned to alpha) reached {reached}");
    let beta_addr = beta.listen_addrs()[0].to_string();
    let refused = gamma.connect(&beta_addr).await.expect_err("not pinned");
    println!("gamma refuses beta: {}", refused.kind());
    gamma.shutdown().await?;

    // The identity file keeps alpha's id across a restart.
    let id = alpha.node_id();
    alpha.shutdown().await?;
    let again = node("alpha")
        .network_key(k2)
        .identity_file(&identity_file)
        .start()
        .await?;
    assert_eq!(again.node_id(), id);
    println!("alpha restarted with the same node id {id}");
    again.shutdown().await?;
    beta.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
