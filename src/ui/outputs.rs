//! The outputs folder: Ctrl+S saves the result there at once, the convention of other diffusion
//! front ends (a folder a day, a running number and the seed, never overwriting), so an export
//! never depends on a file dialog, which some desktops lack (no xdg portal, no zenity).
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `$MIDM_OUTPUTS` (a launch's own choice), if set.
pub fn env_root() -> Option<PathBuf> {
    std::env::var_os("MIDM_OUTPUTS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// `$MIDM_OUTPUTS`, else the folder the user set (`setting`), else `~/Pictures/midm`
/// (`~/midm-outputs` where there is no Pictures folder), else `midm-outputs` in the working
/// directory.
pub fn root(setting: Option<&Path>) -> PathBuf {
    env_root()
        .or(setting.map(Path::to_path_buf))
        .unwrap_or_else(default_root)
}

/// `~/Pictures/midm` (`~/midm-outputs` where there is no Pictures folder), else `midm-outputs`
/// in the working directory.
pub fn default_root() -> PathBuf {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => {
            let pictures = Path::new(&home).join("Pictures");
            if pictures.is_dir() {
                pictures.join("midm")
            } else {
                Path::new(&home).join("midm-outputs")
            }
        }
        None => PathBuf::from("midm-outputs"),
    }
}

/// `root/YYYY-MM-DD` for the UTC day of `now`.
pub fn dated(root: &Path, now: SystemTime) -> PathBuf {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    root.join(format!("{y:04}-{m:02}-{d:02}"))
}

/// The calendar date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`): written
/// here instead of pulling in a date crate for one folder name.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `dir/NNNNN-seedS.png` with a number one above every number already in `dir`: earlier files
/// are never overwritten, and the listing sorts in save order.
pub fn next_path(dir: &Path, seed: u64) -> PathBuf {
    let taken = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.split('-').next()?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0);
    dir.join(format!("{:05}-seed{seed}.png", taken + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_overrides_the_default_and_the_environment_overrides_both() {
        let set = Path::new("/tmp/my-outputs");
        match env_root() {
            None => {
                assert_eq!(root(Some(set)), set);
                assert_eq!(root(None), default_root());
            }
            Some(env) => assert_eq!(root(Some(set)), env),
        }
    }
    use std::time::Duration;

    #[test]
    fn dates_of_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
        let t = UNIX_EPOCH + Duration::from_secs(20_787 * 86_400 + 3_600);
        assert_eq!(dated(Path::new("out"), t), Path::new("out/2026-11-30"));
    }

    #[test]
    fn numbers_run_on_and_never_reuse_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_path(dir.path(), 42);
        assert_eq!(first.file_name().unwrap(), "00001-seed42.png");
        std::fs::write(&first, b"x").unwrap();
        std::fs::write(dir.path().join("00007-seed3.png"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(
            next_path(dir.path(), 5).file_name().unwrap(),
            "00008-seed5.png"
        );
        // a folder that does not exist yet starts at 1
        assert!(next_path(&dir.path().join("new"), 1).ends_with("00001-seed1.png"));
    }
}
