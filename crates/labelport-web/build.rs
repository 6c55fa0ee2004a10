//! Fetches Label Studio's labeling editor for the labeling page, at build
//! time, so the binary carries it and nothing runs Node.js.
//!
//! The editor is the npm package `@heartexlabs/label-studio@1.4.0`
//! (Apache-2.0): its tarball's `build/static/js/main.js` and
//! `build/static/css/main.css` are the whole runtime (no chunks, fonts or
//! CDN URLs; `../shared/reference/web-ui.md` §1). The tarball is checked
//! against the registry's published `sha512` integrity before anything in
//! it is used, and never committed to the repository.
//!
//! Sources, first found wins:
//! 1. `LABELPORT_EDITOR_TARBALL`: a path to the `.tgz` (offline builds);
//! 2. the tarball already fetched into this build's `OUT_DIR`;
//! 3. the npm registry (`LABELPORT_NPM_REGISTRY`, else `npm_config_registry`,
//!    else `https://registry.npmjs.org`), downloaded with `curl`.
//!
//! `curl` (or `wget` where there is no curl, as in the official `rust`
//! container images) rather than an HTTP crate: a build script's
//! dependencies are compiled for every build, and an HTTPS client with its
//! TLS stack would add minutes on small machines for one download. A
//! failure stops the build (`cargo check` and `clippy` too, as the files
//! are embedded) with the reason and the way around it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "@heartexlabs/label-studio";
const VERSION: &str = "1.4.0";
/// The registry's `dist.integrity` for the tarball (checked here on
/// 2026-11-29, and in `../shared/reference/web-ui.md`).
const INTEGRITY: &str =
    "sha512-NczF2gDF/Whq7+xI3tYZLrAk8Pq6hacXhYEDmWfHAQIZ0eiieyrMxxHz4KIU7wnagComaGv+QJ2Zc6SBcBmuCg==";
/// Files taken from the tarball: (path inside it, name written).
const FILES: &[(&str, &str)] = &[
    ("package/build/static/js/main.js", "main.js"),
    ("package/build/static/css/main.css", "main.css"),
    ("package/LICENSE", "LICENSE"),
    ("package/build/static/js/main.js.LICENSE.txt", "main.js.LICENSE.txt"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LABELPORT_EDITOR_TARBALL");
    println!("cargo:rerun-if-env-changed=LABELPORT_NPM_REGISTRY");
    println!("cargo:rerun-if-env-changed=npm_config_registry");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let editor = out.join("editor");
    // The stamp is written last and names the tarball: files of another
    // version, or of an unpacking that was cut short, are never used.
    let stamp = editor.join("STAMP");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == INTEGRITY) {
        return;
    }
    let _ = std::fs::remove_file(&stamp);
    let tarball = match tarball(&out) {
        Ok(bytes) => bytes,
        Err(why) => fail(&why),
    };
    if let Err(why) = unpack(&tarball, &editor).and_then(|()| write(&stamp, INTEGRITY.as_bytes())) {
        fail(&why);
    }
}

fn fail(why: &str) -> ! {
    panic!(
        "\n\nlabelport-web: could not get Label Studio's editor ({PACKAGE}@{VERSION}) for the labeling page: {why}\n\
         Set LABELPORT_NPM_REGISTRY to a reachable npm registry, or download the tarball\n\
         (npm pack {PACKAGE}@{VERSION}) and set LABELPORT_EDITOR_TARBALL to its path.\n\n"
    )
}

fn tarball(out: &Path) -> Result<Vec<u8>, String> {
    if let Ok(path) = std::env::var("LABELPORT_EDITOR_TARBALL") {
        println!("cargo:rerun-if-changed={path}");
        let bytes = std::fs::read(&path).map_err(|e| format!("reading {path}: {e}"))?;
        check_integrity(&bytes).map_err(|e| format!("{path}: {e}"))?;
        return Ok(bytes);
    }
    let cached = out.join(format!("label-studio-{VERSION}.tgz"));
    if let Ok(bytes) = std::fs::read(&cached) {
        if check_integrity(&bytes).is_ok() {
            return Ok(bytes);
        }
    }
    let registry = std::env::var("LABELPORT_NPM_REGISTRY")
        .or_else(|_| std::env::var("npm_config_registry"))
        .unwrap_or_else(|_| "https://registry.npmjs.org".to_owned());
    let url = format!(
        "{}/{PACKAGE}/-/label-studio-{VERSION}.tgz",
        registry.trim_end_matches('/')
    );
    let partial = out.join("label-studio.tgz.part");
    let curl = Command::new("curl")
        .args([
            "--fail",
            "--silent",
            "--show-error",
            "--location",
            "--retry",
            "3",
            "--max-time",
            "300",
            "-o",
        ])
        .arg(&partial)
        .arg(&url)
        .status();
    let status = match curl {
        Ok(status) => status,
        // No curl: wget.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Command::new("wget")
            .args(["--quiet", "--tries=3", "--timeout=300", "-O"])
            .arg(&partial)
            .arg(&url)
            .status()
            .map_err(|e| format!("neither curl nor wget could run to fetch {url}: {e}"))?,
        Err(e) => return Err(format!("running curl for {url}: {e}")),
    };
    if !status.success() {
        return Err(format!("downloading {url} failed ({status})"));
    }
    let bytes = std::fs::read(&partial).map_err(|e| format!("reading the download: {e}"))?;
    check_integrity(&bytes).map_err(|e| format!("{url}: {e}"))?;
    std::fs::rename(&partial, &cached).map_err(|e| format!("keeping the download: {e}"))?;
    Ok(bytes)
}

fn check_integrity(bytes: &[u8]) -> Result<(), String> {
    use base64::Engine;
    use sha2::Digest;
    let got = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
    );
    if got == INTEGRITY {
        Ok(())
    } else {
        Err(format!("checksum mismatch: expected {INTEGRITY}, got {got}"))
    }
}

/// Writes [`FILES`] into `dir`, and gzip copies of the script and style
/// sheet (served to browsers that accept gzip: 2.6 MB become 0.7 MB).
fn unpack(tarball: &[u8], dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut found = 0;
    for entry in archive.entries().map_err(|e| format!("reading the tarball: {e}"))? {
        let mut entry = entry.map_err(|e| format!("reading the tarball: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("reading the tarball: {e}"))?
            .to_string_lossy()
            .into_owned();
        let Some((_, name)) = FILES.iter().find(|(inside, _)| *inside == path) else {
            continue;
        };
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading {path} from the tarball: {e}"))?;
        write(&dir.join(name), &bytes)?;
        if name.ends_with(".js") || name.ends_with(".css") {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&bytes).map_err(|e| format!("compressing {name}: {e}"))?;
            let gz = gz.finish().map_err(|e| format!("compressing {name}: {e}"))?;
            write(&dir.join(format!("{name}.gz")), &gz)?;
        }
        found += 1;
    }
    if found != FILES.len() {
        return Err(format!("the tarball lacks some of {FILES:?}"));
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a file is whole or absent.
fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let partial = path.with_extension("part");
    std::fs::write(&partial, bytes).map_err(|e| format!("writing {}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("writing {}: {e}", path.display()))
}
