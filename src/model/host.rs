//! What a tagent reports about its host, in one struct for every form the
//! tagent takes: the index's record, the stored record, the registration
//! request, the API view and `ctl`.

use serde::{Deserialize, Serialize};

/// A tagent's host facts. `S` is the type of the strings that repeat across
/// tagents: [`super::Sym`] in the index, `String` everywhere else; [`map`]
/// converts between them. Adding a fact is adding it here and to the
/// registration parser.
///
/// The host's `name` stays beside the facts, in each form: it is unique per
/// host (never interned), and here it would cost the index 8 bytes per
/// tagent (a `Box<str>` beside five 4-byte symbols pads this to 56 bytes).
///
/// [`map`]: HostFacts::map
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostFacts<S> {
    pub user: S,
    pub version: S,
    pub os_type: S,
    pub os_version: S,
    pub osbit: S,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
}

impl<S> HostFacts<S> {
    /// The same facts with each string converted by `f`.
    pub fn map<T>(&self, mut f: impl FnMut(&S) -> T) -> HostFacts<T> {
        HostFacts {
            user: f(&self.user),
            version: f(&self.version),
            os_type: f(&self.os_type),
            os_version: f(&self.os_version),
            osbit: f(&self.osbit),
            pcpu: self.pcpu,
            mem: self.mem,
        }
    }
}

/// Reads the facts out of a map with other fields, as `#[serde(flatten)]`
/// would, but without its buffering of every entry (which costs about 40%
/// more per record to decode, at a million records on every start).
pub struct HostFactsReader<S> {
    user: Option<S>,
    version: Option<S>,
    os_type: Option<S>,
    os_version: Option<S>,
    osbit: Option<S>,
    pcpu: Option<f32>,
    mem: Option<f32>,
}

impl<S> Default for HostFactsReader<S> {
    fn default() -> Self {
        HostFactsReader {
            user: None,
            version: None,
            os_type: None,
            os_version: None,
            osbit: None,
            pcpu: None,
            mem: None,
        }
    }
}

impl<'de, S: Deserialize<'de>> HostFactsReader<S> {
    /// Read the value of the fact `key`;
    /// `Ok(false)` leaves the value unread: `key` is not a fact.
    pub fn read<A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        fn once<'de, T: Deserialize<'de>, A: serde::de::MapAccess<'de>>(
            slot: &mut Option<T>,
            key: &'static str,
            map: &mut A,
        ) -> Result<bool, A::Error> {
            if slot.is_some() {
                return Err(serde::de::Error::duplicate_field(key));
            }
            *slot = Some(map.next_value()?);
            Ok(true)
        }
        match key {
            "user" => once(&mut self.user, "user", map),
            "version" => once(&mut self.version, "version", map),
            "os_type" => once(&mut self.os_type, "os_type", map),
            "os_version" => once(&mut self.os_version, "os_version", map),
            "osbit" => once(&mut self.osbit, "osbit", map),
            "pcpu" => {
                self.pcpu = map.next_value()?;
                Ok(true)
            }
            "mem" => {
                self.mem = map.next_value()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The facts read; an error names the first one missing.
    pub fn finish<E: serde::de::Error>(self) -> Result<HostFacts<S>, E> {
        let need = |v: Option<S>, key| v.ok_or_else(|| E::missing_field(key));
        Ok(HostFacts {
            user: need(self.user, "user")?,
            version: need(self.version, "version")?,
            os_type: need(self.os_type, "os_type")?,
            os_version: need(self.os_version, "os_version")?,
            osbit: need(self.osbit, "osbit")?,
            pcpu: self.pcpu,
            mem: self.mem,
        })
    }
}
