//! The outbox's file round, without the GIL: write and fsync a set of `.part` files (several at
//! once: the device serves parallel fsyncs together), rename each onto its target in order, then
//! fsync the targets' directories. `worker.io.outbox.Outbox` calls it once per publish; done in
//! Python, each of those syscalls released and re-took the GIL (six per file), and every one of
//! those hand-overs could stall the event loop.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::thread;

/// One file of the round: where its bytes are written first, where they are renamed to.
pub struct Staged {
    pub part: String,
    pub target: String,
    pub content: Vec<u8>,
}

fn write_synced(file: &Staged) -> io::Result<()> {
    let mut handle = OpenOptions::new().write(true).create(true).truncate(true).open(&file.part)?;
    handle.write_all(&file.content)?;
    handle.sync_all()
}

/// Writes and fsyncs every part, `threads` at a time at most. The first error is returned
/// (after every started write has finished).
pub fn write_all_synced(files: &[Staged], threads: usize) -> io::Result<()> {
    let threads = threads.clamp(1, files.len().max(1));
    if threads == 1 {
        return files.iter().try_for_each(write_synced);
    }
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| scope.spawn(move || files.iter().skip(i).step_by(threads).try_for_each(write_synced)))
            .collect();
        let mut result = Ok(());
        for worker in workers {
            let outcome = worker.join().unwrap_or_else(|_| Err(io::Error::other("outbox writer thread panicked")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    })
}

/// Renames each part onto its target, in order; stops at the first failure and returns how
/// many were renamed with that failure (the caller may retry it and the rest its own way).
pub fn rename_all(files: &[Staged]) -> (usize, Option<io::Error>) {
    for (done, file) in files.iter().enumerate() {
        if let Err(error) = fs::rename(&file.part, &file.target) {
            return (done, Some(error));
        }
    }
    (files.len(), None)
}

/// fsyncs each directory (a rename is durable once its directory is).
pub fn sync_directories(directories: &[String]) -> io::Result<()> {
    for directory in directories {
        if cfg!(unix) {
            File::open(directory)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_renames_and_reports_the_first_failed_rename() {
        let root = std::env::temp_dir().join(format!("execcore-files-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let path = |name: &str| root.join(name).to_string_lossy().into_owned();
        let files: Vec<Staged> = (0..5)
            .map(|i| Staged {
                part: path(&format!("{i}.part")),
                target: path(&format!("{i}.jsonl")),
                content: format!("line {i}\n").into_bytes(),
            })
            .collect();
        write_all_synced(&files, 3).unwrap();
        assert_eq!(rename_all(&files).0, 5);
        sync_directories(&[root.to_string_lossy().into_owned()]).unwrap();
        for i in 0..5 {
            assert_eq!(fs::read_to_string(path(&format!("{i}.jsonl"))).unwrap(), format!("line {i}\n"));
        }
        // The parts are gone now: renaming them again fails at the first.
        let (done, error) = rename_all(&files);
        assert_eq!(done, 0);
        assert_eq!(error.unwrap().kind(), io::ErrorKind::NotFound);
        fs::remove_dir_all(&root).unwrap();
    }
}
