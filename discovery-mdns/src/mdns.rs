//! [`Mdns`]: the [`Discovery`] that advertises and browses with mdns-sd.

use std::fmt;
use std::time::Duration;

use mdns_sd::{
    IfKind, Receiver, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo,
};
use meshbus_core::discovery::{Discovery, DiscoveryEvent};
use meshbus_core::wire::control::{PeerIdentity, VersionRange};
use meshbus_core::{async_trait, Error, ErrorKind, NodeId};

use crate::addr::Resolved;
use crate::browse::Browser;
use crate::txt;

/// How long [`Discovery::shutdown`] waits for the mDNS thread to confirm it has said goodbye.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// Zero-configuration discovery on the local link: advertises this node as a DNS-SD service
/// and finds the other nodes of its network that do the same.
///
/// Built with [`Mdns::new`] and the options below, then handed to
/// [`BusBuilder::discovery`](meshbus_core::BusBuilder::discovery). Nothing touches the network
/// until the bus starts: then the node is advertised as `<node id>.<service type>` with its
/// identity in the TXT record (see the crate docs), browsing starts, and every node of the same
/// network that answers is reported as found; one whose advert is withdrawn (an mDNS goodbye,
/// or its records expiring) is reported as lost. Answers of another network, of a protocol
/// version this build does not speak, and our own are ignored.
///
/// When the bus shuts down the advert is withdrawn with a goodbye, so the other nodes forget
/// this one at once; dropping an `Mdns` does the same. mdns-sd runs one thread per `Mdns` that
/// has started, which ends with it.
///
/// ```
/// use meshbus_discovery_mdns::Mdns;
///
/// // Only configuration: nothing is sent or bound until a bus starts with it.
/// let mdns = Mdns::new().ipv6(false).interface("eth0");
/// # drop(mdns);
/// ```
pub struct Mdns {
    service_type: String,
    ipv6: bool,
    interfaces: Vec<String>,
    running: Option<Running>,
}

/// What a started `Mdns` holds.
struct Running {
    daemon: ServiceDaemon,
    events: Receiver<ServiceEvent>,
    browser: Browser,
}

impl Mdns {
    /// The DNS-SD service type meshbus nodes advertise by default.
    pub const DEFAULT_SERVICE_TYPE: &'static str = "_meshbus._tcp.local.";

    /// mDNS discovery with the defaults: service type
    /// [`DEFAULT_SERVICE_TYPE`](Self::DEFAULT_SERVICE_TYPE), IPv4 and IPv6, every interface.
    pub fn new() -> Self {
        Mdns {
            service_type: Self::DEFAULT_SERVICE_TYPE.to_owned(),
            ipv6: true,
            interfaces: Vec::new(),
            running: None,
        }
    }

    /// Advertises and browses `service_type` instead (`"_myapp._tcp.local."`): nodes with
    /// different service types do not see each other. It must end in `._tcp.local.` or
    /// `._udp.local.`, with at most 15 bytes before that; otherwise the bus fails to start.
    pub fn service_type(mut self, service_type: impl Into<String>) -> Self {
        self.service_type = service_type.into();
        self
    }

    /// Whether mDNS also runs over IPv6 interfaces (default `true`). With `false` only IPv4
    /// multicast is used and only IPv4 addresses are advertised.
    pub fn ipv6(mut self, enabled: bool) -> Self {
        self.ipv6 = enabled;
        self
    }

    /// Runs mDNS only on the interface called `name` (`"eth0"`); may be called several times.
    /// By default every interface that is up takes part.
    pub fn interface(mut self, name: impl Into<String>) -> Self {
        self.interfaces.push(name.into());
        self
    }

    fn start(&mut self, local: &PeerIdentity) -> Result<&mut Running, Error> {
        let daemon = ServiceDaemon::new().map_err(|e| io("could not start the mDNS daemon", e))?;
        let events = self
            .configure(&daemon)
            .map_err(|e| io("could not configure the mDNS daemon", e))
            .and_then(|()| {
                daemon
                    .browse(&self.service_type)
                    .map_err(|e| config(&self.service_type, e))
            });
        let events = match events {
            Ok(events) => events,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(e);
            }
        };
        // From here on the caller stops the daemon if anything fails.
        let running = self.running.insert(Running {
            daemon,
            events,
            browser: Browser::new(local),
        });
        if local.addresses.is_empty() {
            // Nobody could dial us: find the others, stay unseen.
            tracing::debug!("no addresses to advertise; browsing only");
            return Ok(running);
        }
        let info = service_info(&self.service_type, local, &self.interfaces)?;
        let fullname = info.get_fullname().to_lowercase();
        running
            .daemon
            .register(info)
            .map_err(|e| io("could not register the mDNS service", e))?;
        running.browser.registered(fullname);
        Ok(running)
    }

    fn configure(&self, daemon: &ServiceDaemon) -> Result<(), mdns_sd::Error> {
        // Later selections win over earlier ones.
        if !self.interfaces.is_empty() {
            daemon.disable_interface(IfKind::All)?;
            daemon
                .enable_interface(self.interfaces.iter().map(IfKind::from).collect::<Vec<_>>())?;
        }
        if !self.ipv6 {
            daemon.disable_interface(IfKind::IPv6)?;
        }
        Ok(())
    }
}

impl Default for Mdns {
    fn default() -> Self {
        Mdns::new()
    }
}

/// The service advertising `local`: its instance is named by the node id, on a host name of
/// its own whose address records the daemon keeps up to date from the interfaces.
fn service_info(
    service_type: &str,
    local: &PeerIdentity,
    interfaces: &[String],
) -> Result<ServiceInfo, Error> {
    let txt = txt::encode(local, VersionRange::CURRENT).map_err(|e| {
        Error::new(ErrorKind::Config).with_detail(format!(
            "`{}` is {} bytes: too long for an mDNS TXT entry (at most 250)",
            e.key, e.len
        ))
    })?;
    let id = NodeId::from_u128(local.node_id).to_string();
    let host = format!("meshbus-{id}.local.");
    // The SRV record needs a port; the addresses in the TXT record are what peers dial.
    let port = local
        .addresses
        .iter()
        .find_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .unwrap_or(0);
    let mut info = ServiceInfo::new(service_type, &id, &host, (), port, &txt[..])
        .map_err(|e| config(service_type, e))?
        .enable_addr_auto();
    // A random 128-bit instance name cannot clash: skip probing for it, which would delay
    // the first answer by most of a second.
    info.set_requires_probe(false);
    if !interfaces.is_empty() {
        info.set_interfaces(interfaces.iter().map(IfKind::from).collect());
    }
    Ok(info)
}

impl Running {
    fn on_resolved(&mut self, service: &ResolvedService) -> Option<DiscoveryEvent> {
        let resolved: Vec<Resolved> = service
            .get_addresses()
            .iter()
            .map(|ip| Resolved {
                ip: ip.to_ip_addr(),
                scope: match ip {
                    ScopedIp::V6(v6) => v6.scope_id().index,
                    _ => 0,
                },
            })
            .collect();
        self.browser.on_answer(
            service.get_fullname(),
            |key| service.get_property_val_str(key),
            &resolved,
        )
    }
}

#[async_trait]
impl Discovery for Mdns {
    /// Starts the mDNS thread, browses for the service type and, if the node has addresses,
    /// advertises it.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a service type mdns-sd refuses or a network, cluster or
    /// host id too long for a TXT entry; [`Io`](ErrorKind::Io) when the mDNS thread cannot start.
    async fn advertise(&mut self, local: &PeerIdentity) -> Result<(), Error> {
        if self.running.is_some() {
            return Err(Error::new(ErrorKind::Config).with_detail("`Mdns` is already running"));
        }
        match self.start(local) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Stop the thread of a half-started daemon.
                if let Some(r) = self.running.take() {
                    let _ = r.daemon.shutdown();
                }
                Err(e)
            }
        }
    }

    /// # Cancel safety
    ///
    /// Cancel safe: an answer is taken off mdns-sd's channel only when it is handled.
    async fn next(&mut self) -> Option<DiscoveryEvent> {
        let running = self.running.as_mut()?;
        loop {
            // `None` once the daemon has stopped (it closes the channel).
            let event = running.events.recv_async().await.ok()?;
            let found = match event {
                ServiceEvent::ServiceResolved(service) => running.on_resolved(&service),
                ServiceEvent::ServiceRemoved(_, fullname) => running.browser.on_removed(&fullname),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
    }

    /// Withdraws the advert with an mDNS goodbye and stops the mDNS thread, waiting up to half a
    /// second for it to confirm.
    async fn shutdown(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // The daemon says goodbye for every service it advertises before its thread ends.
        match running.daemon.shutdown() {
            Ok(done) => {
                if tokio::time::timeout(SHUTDOWN_WAIT, done.recv_async())
                    .await
                    .is_err()
                {
                    tracing::debug!("the mDNS thread did not confirm its shutdown in time");
                }
            }
            Err(e) => tracing::debug!(error = %e, "the mDNS thread had already stopped"),
        }
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // Not awaited: the thread says goodbye and ends on its own.
            let _ = running.daemon.shutdown();
        }
    }
}

impl fmt::Debug for Mdns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mdns")
            .field("service_type", &self.service_type)
            .field("ipv6", &self.ipv6)
            .field("interfaces", &self.interfaces)
            .field("running", &self.running.is_some())
            .finish()
    }
}

fn io(what: &'static str, e: mdns_sd::Error) -> Error {
    Error::new(ErrorKind::Io).with_detail(what).with_source(e)
}

fn config(service_type: &str, e: mdns_sd::Error) -> Error {
    Error::new(ErrorKind::Config)
        .with_detail(format!("mDNS service type `{service_type}`: {e}"))
        .with_source(e)
}
