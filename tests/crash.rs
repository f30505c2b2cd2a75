//! Killing whaleid in the middle of a long import loses nothing that was reported as
//! committed, leaves a consistent catalogue, and running the import again completes it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use whaleid::catalogue::Catalogue;

const PHOTOS: u32 = 2000;

#[test]
fn sigkill_in_the_middle_of_a_2000_photo_import_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("survey");
    let mut csv = String::from("image,individual_id\n");
    for i in 0..PHOTOS {
        let img = common::photo(i, 160, 120);
        common::write(&data.join(format!("images/p{i:04}.jpg")), common::jpeg_bytes(&img));
        csv.push_str(&format!("p{i:04}.jpg,ID-{}\n", i % 50));
    }
    common::write(&data.join("labels.csv"), csv);
    let cat_path = dir.path().join("survey.whaleid");

    let mut child = common::whaleid()
        .args(["import", "--catalog", cat_path.to_str().unwrap(), data.to_str().unwrap(), "--batch", "40", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut committed = 0u64;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(done) = line.strip_prefix("committed ").and_then(|s| s.split('/').next()) {
            committed = done.parse().unwrap();
            if committed >= 600 {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
    }
    child.wait().unwrap();
    assert!(committed >= 600 && committed < PHOTOS as u64, "killed mid-import after {committed} photos");

    let cat = Catalogue::open(&cat_path).unwrap();
    assert_eq!(cat.check_integrity().unwrap(), Vec::<String>::new());
    let present = cat.photos().unwrap().len() as u64;
    assert!(present >= committed, "{present} photos in the catalogue, {committed} reported committed");
    assert!(present < PHOTOS as u64);
    drop(cat);

    let out = common::whaleid()
        .args(["import", "--catalog", cat_path.to_str().unwrap(), data.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cat = Catalogue::open(&cat_path).unwrap();
    // Counted on a connection of its own: the test reads the file, not the catalogue's API.
    let conn = rusqlite::Connection::open(&cat_path).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM photos"), PHOTOS as i64);
    assert_eq!(count("SELECT count(DISTINCT hash) FROM photos"), PHOTOS as i64);
    assert_eq!(count("SELECT count(*) FROM annotations"), PHOTOS as i64);
    assert_eq!(count("SELECT count(*) FROM identifications"), PHOTOS as i64);
    assert_eq!(count("SELECT count(*) FROM individuals"), 50);
    assert_eq!(cat.check_integrity().unwrap(), Vec::<String>::new());
}
