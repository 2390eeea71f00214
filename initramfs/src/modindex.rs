//! The kernel-module index mkimage writes to [`crate::layout::MODULE_INDEX`].
//!
//! It lists every module in the image with its dependencies and device
//! aliases, the kernel's built-in modules, and the modules the image spec asks
//! to load on every boot. The init resolves load order from it and matches
//! device modaliases against it the way udev/kmod do, so no `modules.dep`,
//! `modules.alias` or depmod is needed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::modinfo::{ModInfo, normalize};

/// One module in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// Kernel name, normalised (`_`, never `-`).
    pub name: String,
    /// Path relative to [`crate::layout::MODULE_DIR`].
    pub path: String,
    /// Hard dependencies, loaded first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// Soft pre-dependencies that are in the image, loaded first as well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub softdep_pre: Vec<String>,
    /// Device alias globs this module drives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// The whole index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleIndex {
    /// `uname -r` of the kernel the modules belong to.
    pub kernel_release: String,
    /// Every module in the image, sorted by name.
    pub modules: Vec<ModuleEntry>,
    /// Modules compiled into the kernel: loading one is a no-op.
    #[serde(default)]
    pub builtin: BTreeSet<String>,
    /// Modules to load on every boot, as the spec names them.
    #[serde(default)]
    pub boot: Vec<String>,
}

/// Why a set of modules cannot be resolved.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("module {module} is not in the image{}", needed_by.as_ref().map(|n| format!(" (needed by {n})")).unwrap_or_default())]
    Missing {
        module: String,
        needed_by: Option<String>,
    },
    #[error("module dependency cycle: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error("module {module}: {message}")]
    Lookup { module: String, message: String },
}

impl ModuleIndex {
    /// Parses the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The JSON form; compact, since the init parses it on every boot.
    pub fn to_json(&self) -> String {
        // Plain data of strings and lists: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The entry for a module name (`-` and `_` are the same).
    pub fn get(&self, name: &str) -> Option<&ModuleEntry> {
        let name = normalize(name);
        self.modules
            .binary_search_by(|m| m.name.as_str().cmp(&name))
            .ok()
            .map(|i| &self.modules[i])
    }

    /// Whether the kernel has the module built in.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules to load for `wanted`, every dependency before its user, each
    /// once. Built-in modules are left out. A name that is neither in the image
    /// nor built in is an error that names it and who needed it.
    pub fn load_order<S: AsRef<str>>(&self, wanted: &[S]) -> Result<Vec<&ModuleEntry>, IndexError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut path = Vec::new();
        for name in wanted {
            self.visit(
                &normalize(name.as_ref()),
                None,
                &mut path,
                &mut done,
                &mut order,
            )?;
        }
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        needed_by: Option<&str>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<&'a ModuleEntry>,
    ) -> Result<(), IndexError> {
        if done.contains(name) || self.is_builtin(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            let mut chain = path.clone();
            chain.push(name.to_owned());
            return Err(IndexError::Cycle { chain });
        }
        let entry = self.get(name).ok_or_else(|| IndexError::Missing {
            module: name.to_owned(),
            needed_by: needed_by.map(str::to_owned),
        })?;
        path.push(name.to_owned());
        for dep in &entry.depends {
            self.visit(dep, Some(name), path, done, order)?;
        }
        for dep in &entry.softdep_pre {
            // Soft dependencies are only listed when the image has them.
            if self.get(dep).is_some() {
                self.visit(dep, Some(name), path, done, order)?;
            }
        }
        path.pop();
        done.insert(name.to_owned());
        order.push(entry);
        Ok(())
    }

    /// Names of the modules whose aliases match a device's modalias, as kmod
    /// matches `modules.alias` (shell globs), sorted and without repeats.
    pub fn modules_for_alias(&self, modalias: &str) -> Vec<&str> {
        let mut hits: Vec<&str> = self
            .modules
            .iter()
            .filter(|m| {
                m.aliases
                    .iter()
                    .any(|a| glob_match(a.as_bytes(), modalias.as_bytes()))
            })
            .map(|m| m.name.as_str())
            .collect();
        hits.dedup();
        hits
    }

    /// Builds the index for an image at build time: `boot` and `extra` name the
    /// modules the spec wants (boot ones are loaded on every boot, extra ones
    /// only when a device asks for them). `lookup` finds a module by name and
    /// returns its path and metadata, or `None` if the kernel has no such
    /// module file. Hard dependencies are followed to closure; a missing one is
    /// an error. Soft pre-dependencies are included when they exist.
    pub fn build<F>(
        kernel_release: &str,
        builtin: BTreeSet<String>,
        boot: &[String],
        extra: &[String],
        mut lookup: F,
    ) -> Result<Self, IndexError>
    where
        F: FnMut(&str) -> Result<Option<(String, ModInfo)>, String>,
    {
        let builtin: BTreeSet<String> = builtin.iter().map(|b| normalize(b)).collect();
        let mut found: BTreeMap<String, ModuleEntry> = BTreeMap::new();
        let mut queue: Vec<(String, Option<String>, bool)> = boot
            .iter()
            .chain(extra)
            .map(|n| (normalize(n), None, true))
            .collect();
        while let Some((name, needed_by, required)) = queue.pop() {
            if found.contains_key(&name) || builtin.contains(&name) {
                continue;
            }
            let hit = lookup(&name).map_err(|message| IndexError::Lookup {
                module: name.clone(),
                message,
            })?;
            let Some((path, info)) = hit else {
                if required {
                    return Err(IndexError::Missing {
                        module: name,
                        needed_by,
                    });
                }
                continue;
            };
            for dep in &info.depends {
                queue.push((dep.clone(), Some(name.clone()), true));
            }
            for dep in &info.softdep_pre {
                queue.push((dep.clone(), Some(name.clone()), false));
            }
            found.insert(
                name.clone(),
                ModuleEntry {
                    name,
                    path,
                    depends: info.depends,
                    softdep_pre: info.softdep_pre,
                    aliases: info.aliases,
                },
            );
        }
        // A soft dependency may name an alias rather than a module (ext4's
        // "pre: crypto-crc32c"): as modprobe does, it then stands for every
        // module in the image with a matching alias. What matches nothing is
        // dropped, so the init never looks for it.
        let present: BTreeSet<String> = found.keys().cloned().collect();
        let aliases: Vec<(String, Vec<String>)> = found
            .values()
            .map(|m| (m.name.clone(), m.aliases.clone()))
            .collect();
        for entry in found.values_mut() {
            entry.softdep_pre = entry
                .softdep_pre
                .iter()
                .flat_map(|d| {
                    if present.contains(d) {
                        return vec![d.clone()];
                    }
                    aliases
                        .iter()
                        .filter(|(name, patterns)| {
                            *name != entry.name
                                && patterns.iter().any(|a| {
                                    // As kmod's alias_normalize: `-` and `_`
                                    // are the same.
                                    glob_match(normalize(a).as_bytes(), normalize(d).as_bytes())
                                })
                        })
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .collect();
            entry.softdep_pre.sort();
            entry.softdep_pre.dedup();
        }
        let index = ModuleIndex {
            kernel_release: kernel_release.to_owned(),
            modules: found.into_values().collect(),
            builtin,
            boot: boot.iter().map(|b| normalize(b)).collect(),
        };
        // Reject cycles at build time rather than on the target machine.
        let all: Vec<&str> = index.modules.iter().map(|m| m.name.as_str()).collect();
        index.load_order(&all)?;
        Ok(index)
    }
}

/// Shell-style glob match (`*`, `?`, `[a-z]`, `[!x]`), as fnmatch(3) without
/// flags, which is what kmod uses for module aliases.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the most recent `*`: (pattern index, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, text[t]),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                // Let the last `*` swallow one more byte and retry.
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression starting at `pattern[open]`.
/// Returns the index after the closing `]` on a match. An unterminated `[`
/// matches itself literally, as fnmatch does.
fn match_class(pattern: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        match pattern.get(i) {
            None => return (c == b'[').then_some(open + 1),
            Some(b']') if !first => break,
            Some(&lo) => {
                if pattern.get(i + 1) == Some(&b'-')
                    && pattern.get(i + 2).is_some_and(|&h| h != b']')
                {
                    let hi = pattern[i + 2];
                    hit |= lo <= c && c <= hi;
                    i += 3;
                } else {
                    hit |= lo == c;
                    i += 1;
                }
            }
        }
        first = false;
    }
    (hit != negate).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, depends: &[&str]) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            depends: depends.iter().map(|d| d.to_string()).collect(),
            softdep_pre: vec![],
            aliases: vec![],
        }
    }

    fn index(mut modules: Vec<ModuleEntry>, builtin: &[&str]) -> ModuleIndex {
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        ModuleIndex {
            kernel_release: "6.1.0-test".into(),
            modules,
            builtin: builtin.iter().map(|b| b.to_string()).collect(),
            boot: vec![],
        }
    }

    fn names(order: &[&ModuleEntry]) -> Vec<String> {
        order.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        // The amd64 virtio network stack as Debian's modinfo describes it.
        let idx = index(
            vec![
                entry("virtio_net", &["net_failover"]),
                entry("net_failover", &["failover"]),
                entry("failover", &[]),
                entry(
                    "virtio_pci",
                    &[
                        "virtio_pci_modern_dev",
                        "virtio_pci_legacy_dev",
                        "virtio",
                        "virtio_ring",
                    ],
                ),
                entry("virtio_pci_modern_dev", &[]),
                entry("virtio_pci_legacy_dev", &[]),
                entry("virtio", &[]),
                entry("virtio_ring", &[]),
            ],
            &[],
        );
        let order = idx
            .load_order(&["virtio-net", "virtio_pci", "failover"])
            .unwrap();
        assert_eq!(
            names(&order),
            [
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio",
                "virtio_ring",
                "virtio_pci"
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped_and_missing_ones_named() {
        let idx = index(
            vec![
                entry("virtio_net", &["net_failover", "virtio_ring"]),
                entry("net_failover", &["failover"]),
            ],
            &["virtio_ring"],
        );
        assert_eq!(
            idx.load_order(&["virtio_net"]).unwrap_err(),
            IndexError::Missing {
                module: "failover".into(),
                needed_by: Some("net_failover".into())
            }
        );
        assert_eq!(
            idx.load_order(&["e1000e"]).unwrap_err().to_string(),
            "module e1000e is not in the image"
        );
        assert!(idx.load_order(&["virtio_ring"]).unwrap().is_empty());
    }

    #[test]
    fn cycles_are_reported_with_their_chain() {
        let idx = index(vec![entry("a", &["b"]), entry("b", &["a"])], &[]);
        assert_eq!(
            idx.load_order(&["a"]).unwrap_err(),
            IndexError::Cycle {
                chain: vec!["a".into(), "b".into(), "a".into()]
            }
        );
    }

    #[test]
    fn build_follows_hard_and_soft_dependencies() {
        let tree: BTreeMap<&str, (&[&str], &[&str])> = [
            ("virtio_net", (&["net_failover"][..], &[][..])),
            ("net_failover", (&["failover"][..], &[][..])),
            ("failover", (&[][..], &[][..])),
            ("crc32c_generic", (&[][..], &[][..])),
            (
                "ext4",
                (&["virtio_ring"][..], &["crc32c_generic", "absent"][..]),
            ),
        ]
        .into_iter()
        .collect();
        let lookup = |name: &str| {
            Ok(tree.get(name).map(|(deps, soft)| {
                (
                    format!("kernel/{name}.ko"),
                    ModInfo {
                        name: name.into(),
                        depends: deps.iter().map(|d| d.to_string()).collect(),
                        softdep_pre: soft.iter().map(|d| d.to_string()).collect(),
                        ..ModInfo::default()
                    },
                )
            }))
        };
        let builtin: BTreeSet<String> = ["virtio_ring".to_string()].into();
        let idx = ModuleIndex::build(
            "r",
            builtin.clone(),
            &["virtio-net".into()],
            &["ext4".into()],
            lookup,
        )
        .unwrap();
        let all: Vec<&str> = idx.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            all,
            [
                "crc32c_generic",
                "ext4",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(idx.get("ext4").unwrap().softdep_pre, ["crc32c_generic"]);
        assert_eq!(idx.boot, ["virtio_net"]);
        let parsed = ModuleIndex::from_json(idx.to_json().as_bytes()).unwrap();
        assert_eq!(parsed, idx);

        let err = ModuleIndex::build("r", builtin, &["nvme".into()], &[], lookup).unwrap_err();
        assert_eq!(err.to_string(), "module nvme is not in the image");
    }

    #[test]
    fn a_soft_dependency_on_an_alias_is_the_modules_that_carry_it() {
        // Debian's ext4: "softdep: pre: crypto-crc32c", an alias that
        // crc32c_generic (and, on x86, crc32c_intel) carries.
        let lookup = |name: &str| {
            let (soft, aliases): (&[&str], &[&str]) = match name {
                "ext4" => (&["crypto-crc32c", "nothing-has-this"], &["fs-ext4"]),
                "crc32c_generic" => (&[], &["crypto-crc32c-generic", "crypto-crc32c", "crc32c"]),
                "crc32c_intel" => (&[], &["crypto-crc32c-intel", "crypto-crc32c"]),
                _ => return Ok(None),
            };
            Ok(Some((
                format!("kernel/{name}.ko"),
                ModInfo {
                    name: name.into(),
                    softdep_pre: soft.iter().map(|d| d.to_string()).collect(),
                    aliases: aliases.iter().map(|d| d.to_string()).collect(),
                    ..ModInfo::default()
                },
            )))
        };
        let idx = ModuleIndex::build(
            "r",
            BTreeSet::new(),
            &[],
            &[
                "ext4".into(),
                "crc32c_intel".into(),
                "crc32c_generic".into(),
            ],
            lookup,
        )
        .unwrap();
        assert_eq!(
            idx.get("ext4").unwrap().softdep_pre,
            ["crc32c_generic", "crc32c_intel"]
        );
        let order = idx.load_order(&["ext4"]).unwrap();
        assert_eq!(names(&order), ["crc32c_generic", "crc32c_intel", "ext4"]);
    }

    #[test]
    fn aliases_match_like_fnmatch() {
        let table: &[(&str, &str, bool)] = &[
            (
                "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                true,
            ),
            (
                "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
                false,
            ),
            ("virtio:d00000001v*", "virtio:d00000001v00001AF4", true),
            ("virtio:d00000001v*", "virtio:d00000003v00001AF4", false),
            (
                "pci:v*d*sv*sd*bc01sc08i02*",
                "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02",
                true,
            ),
            ("acpi*:PNP0501:*", "acpi:PNP0501:", true),
            ("of:N*T*Cvirtio,mmio", "of:NvirtioT(null)Cvirtio,mmio", true),
            (
                "of:N*T*Cvirtio,mmioC*",
                "of:NvirtioT(null)Cvirtio,mmio",
                false,
            ),
            (
                "of:N*T*Cvirtio,mmioC*",
                "of:NvirtioT(null)Cvirtio,mmioCvirtio,v2",
                true,
            ),
            ("usb:v[0-9]*", "usb:v1", true),
            ("usb:v[!0-9]*", "usb:v1", false),
            ("usb:v[^a]x", "usb:vbx", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[]]", "]", true),
            ("[", "[", true),
            ("**", "", true),
            ("", "x", false),
        ];
        for (pattern, text, want) in table {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                *want,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn modalias_lookup_names_every_driver_once() {
        let mut net = entry("virtio_net", &[]);
        net.aliases = vec!["virtio:d00000001v*".into()];
        let mut pci = entry("virtio_pci", &[]);
        pci.aliases = vec![
            "pci:v00001AF4d*sv*sd*bc*sc*i*".into(),
            "pci:v00001AF4d0000104?sv*sd*bc*sc*i*".into(),
        ];
        let idx = index(vec![net, pci], &[]);
        assert_eq!(
            idx.modules_for_alias("virtio:d00000001v00001AF4"),
            ["virtio_net"]
        );
        assert_eq!(
            idx.modules_for_alias("pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"),
            ["virtio_pci"]
        );
        assert!(
            idx.modules_for_alias("pci:v00008086d00001234sv*")
                .is_empty()
        );
    }
}
