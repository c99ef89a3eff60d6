//! The message traits: [`Event`] and [`Command`].

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A fact that happened, published to every subscriber in scope (fire and forget).
///
/// Subscribers in the same process share one value (`Arc<E>`), so an event needs no `Clone`.
/// The `Serialize`/`Deserialize` bounds are used only when the event leaves the process.
///
/// `#[derive(Event)]` (feature `derive` of the `meshbus` crate) implements it with the type's
/// name as [`NAME`](Event::NAME); `#[meshbus(name = "...")]` overrides it.
///
/// # Examples
///
/// ```
/// use meshbus_core::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct UserCreated { user_id: u64 }
///
/// impl Event for UserCreated {
///     const NAME: &'static str = "users.created";
/// }
///
/// let event = UserCreated { user_id: 7 };
/// assert_eq!(event.user_id, 7);
/// assert_eq!(UserCreated::NAME, "users.created");
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable wire name of the event. Subscribers and publishers meet on it, so it must not
    /// change when the type is renamed or moved.
    const NAME: &'static str;
}

/// A request that exactly one handler answers with a typed [`Reply`](Command::Reply).
///
/// A command whose handler returns nothing has `type Reply = ()`; the caller still gets
/// `Ok(())` only after the handler has finished.
///
/// # Examples
///
/// ```
/// use meshbus_core::Command;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping { text: String }
///
/// impl Command for Ping {
///     const NAME: &'static str = "diag.ping";
///     type Reply = String;
/// }
///
/// let ping = Ping { text: "hi".into() };
/// let reply: <Ping as Command>::Reply = ping.text;
/// assert_eq!(reply, "hi");
/// ```
pub trait Command: Serialize + DeserializeOwned + Send + 'static {
    /// The stable wire name of the command.
    const NAME: &'static str;
    /// What the handler answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}
