//! Typed reading of a connector's string options, collecting every bad key in one error.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One documented connector option. The README's option table lists exactly these.
#[derive(Debug, Clone, Copy)]
pub struct OptionDef {
    pub name: &'static str,
    /// The default, as the user would write it; `None` when the option has no default.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// An invalid connector config: one message per bad key, each starting with the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl ConfigError {
    pub fn one(msg: impl Into<String>) -> Self {
        ConfigError(vec![msg.into()])
    }
}

/// Reads options from a connector's config map; every problem is recorded, and
/// [`Options::finish`] reports them all at once.
pub struct Options<'a> {
    values: &'a BTreeMap<String, String>,
    errors: RefCell<Vec<String>>,
}

impl<'a> Options<'a> {
    pub fn new(values: &'a BTreeMap<String, String>) -> Self {
        Options {
            values,
            errors: RefCell::new(Vec::new()),
        }
    }

    /// Records a problem with `key`.
    pub fn error(&self, key: &str, msg: impl fmt::Display) {
        self.errors.borrow_mut().push(format!("{key}: {msg}"));
    }

    /// The value of `key`, trimmed; `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.values
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `key` exactly as given (not trimmed); `None` when absent or empty.
    pub fn raw(&self, key: &str) -> Option<String> {
        self.values.get(key).filter(|v| !v.is_empty()).cloned()
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A number (or anything `FromStr`), `default` when absent.
    pub fn parse<T: FromStr + Copy>(&self, key: &str, default: T) -> T {
        match self.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.error(key, format!("`{v}` is not a valid {}", short_type::<T>()));
                default
            }),
        }
    }

    /// A number of at least `min`.
    pub fn at_least<T: FromStr + Copy + PartialOrd + fmt::Display>(
        &self,
        key: &str,
        default: T,
        min: T,
    ) -> T {
        let v = self.parse(key, default);
        if v < min {
            self.error(key, format!("must be at least {min}, got {v}"));
        }
        v
    }

    /// A number from `min` to `max`.
    pub fn between<T: FromStr + Copy + PartialOrd + fmt::Display>(
        &self,
        key: &str,
        default: T,
        min: T,
        max: T,
    ) -> T {
        let v = self.at_least(key, default, min);
        if v > max {
            self.error(key, format!("must be at most {max}, got {v}"));
            return default;
        }
        v
    }

    /// Properties for librdkafka under `prefix` (`consumer.override.`): each is set on a client
    /// configuration as librdkafka reads it, so a property it does not know, or a value it
    /// refuses, is an error naming the option here, not a task failing at start.
    pub fn librdkafka(&self, prefix: &str) -> BTreeMap<String, String> {
        let props = self.with_prefix(prefix);
        for (k, v) in &props {
            let mut c = rdkafka::ClientConfig::new();
            c.set(k, v);
            if let Err(e) = c.create_native_config() {
                self.error(
                    &format!("{prefix}{k}"),
                    format!("librdkafka refuses it: {e}"),
                );
            }
        }
        props
    }

    /// Properties under `prefix` as [`Self::librdkafka`] checks them; those in `reserved`
    /// (cdc-sink sets them itself) are refused.
    pub fn overrides(&self, prefix: &str, reserved: &[&str]) -> BTreeMap<String, String> {
        let props = self.librdkafka(prefix);
        for key in reserved.iter().filter(|k| props.contains_key(**k)) {
            self.error(
                &format!("{prefix}{key}"),
                "is set by cdc-sink and cannot be overridden",
            );
        }
        props
    }

    /// `producer.override.*`: an idempotent producer waiting for every replica, its
    /// transactional id cdc-sink's.
    pub fn producer_overrides(&self) -> BTreeMap<String, String> {
        self.overrides(
            "producer.override.",
            &["transactional.id", "enable.idempotence", "acks"],
        )
    }

    pub fn bool(&self, key: &str, default: bool) -> bool {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("true") => true,
            Some("false") => false,
            Some(v) => {
                self.error(key, format!("`{v}` is not true or false"));
                default
            }
        }
    }

    /// One of `allowed` (case-insensitive); returns the allowed spelling.
    pub fn choice(
        &self,
        key: &str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        match self.get(key) {
            None => default,
            Some(v) => allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(v))
                .copied()
                .unwrap_or_else(|| {
                    self.error(key, format!("`{v}` is not one of {}", allowed.join(", ")));
                    default
                }),
        }
    }

    /// A comma-separated list, items trimmed, empty items dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every key that starts with `prefix`, with the prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        self.values
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k[prefix.len()..].to_string(), v.clone()))
            .collect()
    }

    /// Succeeds when no problem was recorded.
    pub fn finish(self) -> Result<(), ConfigError> {
        let errors = self.errors.into_inner();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }
}

fn short_type<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    if name.starts_with('u') || name.starts_with('i') {
        "integer"
    } else if name.starts_with('f') {
        "number"
    } else {
        name.rsplit("::").next().unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_key_is_named() {
        let map: BTreeMap<String, String> = [
            ("batch.size", "abc"),
            ("key.ignore", "yes"),
            ("linger.ms", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = Options::new(&map);
        assert_eq!(o.parse("batch.size", 2000u32), 2000);
        assert!(!o.bool("key.ignore", false));
        assert_eq!(o.parse("linger.ms", 100u64), 5);
        let err = o.finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch.size: `abc` is not a valid integer; key.ignore: `yes` is not true or false"
        );
    }
}
