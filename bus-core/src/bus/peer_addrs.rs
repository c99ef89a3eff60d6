//! What [`BusBuilder::peers`](crate::BusBuilder::peers) and
//! [`Bus::add_peers`](crate::Bus::add_peers) take: one address or many, as text or as the
//! [`Addr`]s another node's [`listen_addrs`](crate::Bus::listen_addrs) returns.

use std::borrow::Cow;
use std::sync::Arc;

use crate::transport::Addr;

/// One peer address: text (`"tcp://10.0.0.5:7000"`) or an [`Addr`].
///
/// Sealed: implemented for `Addr`, `&Addr`, `String`, `&str`, `&String`, `Box<str>`,
/// `Arc<str>` and `Cow<str>`.
pub trait PeerAddr: sealed::Sealed {
    /// The address as text, parsed when it is given to the bus.
    #[doc(hidden)]
    fn into_addr_string(self) -> String;
}

/// One or many peer addresses: a single [`Addr`] (or `&Addr`), or anything that iterates over
/// [`PeerAddr`]s (`["inmem://a"]`, `bus.listen_addrs()`, `vec![addr]`, an iterator).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), meshbus_core::Error> {
/// use meshbus_core::transport::Addr;
/// use meshbus_core::Bus;
///
/// // What another node's `listen_addrs()` returns, or text.
/// let seeds: Vec<Addr> = vec!["tcp://10.0.0.5:7000".parse()?];
/// let builder = Bus::builder()
///     .peers(&seeds)
///     .peers(&seeds[0])
///     .peers(["tcp://10.0.0.6:7000"])
///     .peers((7001..7003).map(|port| format!("tcp://10.0.0.7:{port}")));
/// # drop(builder);
/// # Ok(()) }
/// ```
pub trait IntoPeerAddrs {
    /// The addresses as text, parsed when they are given to the bus.
    #[doc(hidden)]
    fn into_addr_strings(self) -> Vec<String>;
}

impl<I> IntoPeerAddrs for I
where
    I: IntoIterator,
    I::Item: PeerAddr,
{
    fn into_addr_strings(self) -> Vec<String> {
        self.into_iter().map(PeerAddr::into_addr_string).collect()
    }
}

impl IntoPeerAddrs for Addr {
    fn into_addr_strings(self) -> Vec<String> {
        vec![self.into_addr_string()]
    }
}

impl IntoPeerAddrs for &Addr {
    fn into_addr_strings(self) -> Vec<String> {
        vec![self.into_addr_string()]
    }
}

macro_rules! text_addr {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl PeerAddr for $t {
            fn into_addr_string(self) -> String {
                String::from(&*self)
            }
        }
    )*};
}

text_addr!(String, &str, &String, Box<str>, Arc<str>, Cow<'_, str>);

impl sealed::Sealed for Addr {}
impl PeerAddr for Addr {
    fn into_addr_string(self) -> String {
        self.as_str().to_owned()
    }
}

impl sealed::Sealed for &Addr {}
impl PeerAddr for &Addr {
    fn into_addr_string(self) -> String {
        self.as_str().to_owned()
    }
}

mod sealed {
    pub trait Sealed {}
}
