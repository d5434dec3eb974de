//! Standalone mode's state file: the connectors posted over REST and their target states, in
//! `<worker.state_dir>/connectors.json`, so a restart brings them back.
//!
//! Every change rewrites the whole file atomically: written to a temporary file, synced,
//! renamed over the old one, and the directory synced. A crash leaves the old file or the new
//! one, never a mix. A file that does not parse (truncated or edited by hand) is refused with
//! its path and the parser's reason: the worker does not start with half its connectors.
//!
//! Configs are kept as posted, with `${env:…}`/`${file:…}` placeholders unresolved; a secret
//! written literally into a config is kept literally (the file is readable by its owner only).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TargetState;
use crate::connector::ConnectorConfig;

/// One connector as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub config: ConnectorConfig,
    pub state: TargetState,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The layout of this file; bumped on an incompatible change.
    format: u32,
    connectors: Vec<FileConnector>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConnector {
    name: String,
    config: BTreeMap<String, String>,
    state: TargetState,
}

const FORMAT: u32 = 1;

pub struct Store {
    path: PathBuf,
}

impl Store {
    /// Opens (creating the directory if needed) the state file of `dir`, and reads what it keeps.
    pub fn open(dir: &Path) -> Result<(Store, Vec<Stored>), String> {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        let store = Store {
            path: dir.join("connectors.json"),
        };
        let stored = store.read()?;
        Ok((store, stored))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Vec<Stored>, String> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let file: File = serde_json::from_str(&text).map_err(|e| {
            format!(
                "the state file {} is damaged ({e}); nothing was loaded from it. Restore it, or \
                 move it away to start without the connectors it kept",
                self.path.display()
            )
        })?;
        if file.format != FORMAT {
            return Err(format!(
                "the state file {} has format {}, this worker reads format {FORMAT}",
                self.path.display(),
                file.format
            ));
        }
        Ok(file
            .connectors
            .into_iter()
            .map(|c| Stored {
                config: ConnectorConfig {
                    name: c.name,
                    config: c.config,
                },
                state: c.state,
            })
            .collect())
    }

    /// Replaces what is kept with `connectors`, atomically.
    pub fn save(&self, connectors: &[Stored]) -> Result<(), String> {
        let file = File {
            format: FORMAT,
            connectors: connectors
                .iter()
                .map(|s| FileConnector {
                    name: s.config.name.clone(),
                    config: s.config.config.clone(),
                    state: s.state,
                })
                .collect(),
        };
        let body = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed when the test ends (they had been left in the temporary
    /// directory, two a run).
    struct Dir(PathBuf);

    impl std::ops::Deref for Dir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Dir {
        let d = std::env::temp_dir().join(format!("cdc-sink-store-{}", fastrand::u64(..)));
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn stored(name: &str, state: TargetState) -> Stored {
        Stored {
            config: ConnectorConfig {
                name: name.into(),
                config: BTreeMap::from([
                    ("name".into(), name.into()),
                    ("topics".into(), "t".into()),
                ]),
            },
            state,
        }
    }

    #[test]
    fn what_is_saved_comes_back() {
        let d = dir();
        let (s, none) = Store::open(&d).unwrap();
        assert!(none.is_empty());
        let all = vec![
            stored("a", TargetState::Running),
            stored("b", TargetState::Stopped),
        ];
        s.save(&all).unwrap();
        let (_, back) = Store::open(&d).unwrap();
        assert_eq!(back, all);
        assert!(!d.join("connectors.json.tmp").exists());
    }

    #[test]
    fn a_truncated_file_is_refused_not_half_loaded() {
        let d = dir();
        let (s, _) = Store::open(&d).unwrap();
        s.save(&[
            stored("a", TargetState::Running),
            stored("b", TargetState::Paused),
        ])
        .unwrap();
        let full = fs::read(d.join("connectors.json")).unwrap();
        for cut in [full.len() - 1, full.len() / 2, 1] {
            fs::write(d.join("connectors.json"), &full[..cut]).unwrap();
            let err = Store::open(&d)
                .err()
                .expect("a truncated file must be refused");
            assert!(err.contains("is damaged"), "{err}");
            assert!(err.contains("connectors.json"), "{err}");
        }
    }
}
