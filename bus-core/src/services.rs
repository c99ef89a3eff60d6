//! The type-keyed container of shared services that handler factories draw from.

use std::any::{type_name, Any, TypeId};
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::Error;

/// Shared services (a database pool, a clock, configuration...) keyed by type.
///
/// Services are registered on the builder ([`BusBuilder::service`](crate::BusBuilder::service))
/// and handed to handler factories inside [`start()`](crate::BusBuilder::start), which take what
/// they need with [`get`](Services::get). A missing service is a start-up error naming its type,
/// never a panic at dispatch time.
///
/// # Examples
///
/// ```
/// use meshbus_core::{ErrorKind, Services};
///
/// struct Greeting(&'static str);
///
/// let mut services = Services::new();
/// services.insert(Greeting("hello"));
/// assert_eq!(services.get::<Greeting>().unwrap().0, "hello");
/// assert_eq!(services.get::<u32>().unwrap_err().kind(), ErrorKind::Config);
/// ```
#[derive(Clone, Default)]
pub struct Services {
    map: FxHashMap<TypeId, Entry>,
}

#[derive(Clone)]
struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    name: &'static str,
}

impl Services {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service, replacing an earlier one of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, service: T) {
        self.insert_arc(Arc::new(service));
    }

    /// Adds a service that is already shared, replacing an earlier one of the same type.
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, service: Arc<T>) {
        self.map.insert(
            TypeId::of::<T>(),
            Entry {
                value: service,
                name: type_name::<T>(),
            },
        );
    }

    /// The service of type `T`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config), naming the type, when no service of that
    /// type was registered.
    pub fn get<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, Error> {
        self.try_get().ok_or_else(|| {
            Error::config(format!(
                "missing service `{}`: register it with `BusBuilder::service`",
                type_name::<T>()
            ))
        })
    }

    /// The service of type `T`, if registered.
    pub fn try_get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let entry = self.map.get(&TypeId::of::<T>())?;
        entry.value.clone().downcast::<T>().ok()
    }

    /// Whether a service of type `T` is registered.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.map.contains_key(&TypeId::of::<T>())
    }

    /// How many services are registered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no service is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.map.values().map(|e| e.name).collect();
        names.sort_unstable();
        f.debug_set().entries(names).finish()
    }
}
