//! The commands a biologist runs on a catalogue, each checked for what it is relied on for:
//! `history` lists the edits newest first, `relink` finds moved photos and changes nothing
//! else, `eval` honours photos tagged `role=query`, training accepts every documented loss,
//! chooses the backbone depth the folds favour and caches fewer views on a large catalogue.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{jpeg_bytes, photo, write};
use whaleid::base::progress::Silent;
use whaleid::catalogue::Catalogue;
use whaleid::jobs::import::{ImportOptions, import};
use whaleid::jobs::train::{TrainConfig, TrainEvent, TrainReport, train_catalogue};
use whaleid::models::{Dinov2Config, Embedder};

fn tiny() -> Embedder {
    Embedder::random(&Dinov2Config::tiny(), 56).unwrap()
}

/// Photos `images/pNNN.png` of made-up individuals: individual `i` is a fixed colour on each
/// 14-pixel square of a 4 x 4 grid, each photo of it that pattern with pixel noise. Returns
/// the image names with their individual (`ID-i`), `per` photos each.
fn pattern_photos(dir: &Path, individuals: usize, per: usize, side: u32) -> Vec<(String, String)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut named = Vec::new();
    for i in 0..individuals {
        let pattern: Vec<[u8; 3]> = (0..16).map(|_| [rng.random(), rng.random(), rng.random()]).collect();
        for k in 0..per {
            let img = image::RgbImage::from_fn(side, side, |x, y| {
                let cell = pattern[((y * 4 / side) * 4 + x * 4 / side) as usize];
                image::Rgb(cell.map(|c| c.saturating_add(rng.random_range(0..24))))
            });
            let name = format!("p{:04}.png", i * per + k);
            write(&dir.join("images").join(&name), common::png_bytes(&img));
            named.push((name, format!("ID-{i}")));
        }
    }
    named
}

/// Writes `labels.csv` (generic format) naming each photo's individual.
fn labels_csv(dir: &Path, named: &[(String, String)]) {
    let rows: String = named.iter().map(|(image, id)| format!("{image},{id}\n")).collect();
    write(&dir.join("labels.csv"), format!("image,individual_id\n{rows}"));
}

/// A catalogue of `pattern_photos` (6 individuals, 3 photos each, `side` pixels) imported with
/// their labels from `dir/data`; the catalogue, that folder and the photos' names.
fn pattern_catalogue(dir: &Path, side: u32) -> (Catalogue, std::path::PathBuf, Vec<(String, String)>) {
    let data = dir.join("data");
    let named = pattern_photos(&data, 6, 3, side);
    labels_csv(&data, &named);
    (imported(dir, &data), data, named)
}

fn imported(dir: &Path, data: &Path) -> Catalogue {
    let mut cat = Catalogue::create(&dir.join("c.whaleid")).unwrap();
    let report = import(&mut cat, data, &ImportOptions::default(), &Silent).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    cat
}

/// Trains and returns the report with every event sent.
fn train(cat: &Catalogue, embedder: &Embedder, config: &TrainConfig, out: &Path) -> (TrainReport, Vec<TrainEvent>) {
    let (sender, receiver) = std::sync::mpsc::channel();
    let report = train_catalogue(cat, embedder, config, out, &sender, &AtomicBool::new(false), &Silent).unwrap();
    drop(sender);
    (report, receiver.into_iter().collect())
}

fn card(report: &TrainReport) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(&report.card).unwrap()).unwrap()
}

#[test]
fn history_lists_the_edits_newest_first_and_marks_the_undone_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("survey");
    common::photos(&data, 3, 64, 48);
    write(&data.join("labels.csv"), "image,individual_id\np000.jpg,F1\np001.jpg,F1\np002.jpg,F2\n");
    let cat_path = dir.path().join("c.whaleid");
    let c = cat_path.to_str().unwrap();
    common::whaleid_json_in(dir.path(), &["import", "--catalog", c, data.to_str().unwrap(), "--json"]);
    {
        let mut cat = Catalogue::open(&cat_path).unwrap();
        let f1 = cat.individual_by_code("F1").unwrap().unwrap().id;
        let f2 = cat.individual_by_code("F2").unwrap().unwrap().id;
        cat.rename_individual(f1, "Salt").unwrap();
        cat.merge_individuals(f1, f2).unwrap();
    }
    let undone = common::whaleid_json_in(dir.path(), &["undo", "--catalog", c, "--json"]);
    assert_eq!(undone["done"], "merge individuals");

    let history = common::whaleid_json_in(dir.path(), &["history", "--catalog", c, "--json"]);
    let edits: Vec<(i64, String, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_i64().unwrap(), a["label"].as_str().unwrap().to_string(), a["undone"] == true))
        .collect();
    let labels: Vec<(&str, bool)> = edits.iter().map(|(_, l, u)| (l.as_str(), *u)).collect();
    assert_eq!(labels.len(), 3, "{history}");
    assert_eq!(labels[..2], [("merge individuals", true), ("rename individual", false)]);
    assert!(labels[2].0.starts_with("import ") && labels[2].0.ends_with("survey") && !labels[2].1, "{labels:?}");
    assert!(edits.windows(2).all(|w| w[0].0 > w[1].0), "newest first: {edits:?}");

    let newest = common::whaleid_json_in(dir.path(), &["history", "--catalog", c, "--limit", "1", "--json"]);
    assert_eq!(newest.as_array().unwrap().len(), 1);
    assert_eq!(newest[0]["label"], "merge individuals");

    let text = common::whaleid_in(dir.path()).args(["history", "--catalog", c]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with("merge individuals (undone)") && lines[1].ends_with("rename individual"), "{text}");
}

#[test]
fn relink_finds_moved_photos_by_content_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let season1 = dir.path().join("season1");
    common::photos(&season1, 3, 64, 48);
    write(&season1.join("labels.csv"), "image,individual_id\np000.jpg,F1\np001.jpg,F2\np002.jpg,F1\n");
    let season2 = dir.path().join("season2");
    write(&season2.join("q.jpg"), jpeg_bytes(&photo(50, 64, 48)));
    let cat_path = dir.path().join("c.whaleid");
    let c = cat_path.to_str().unwrap();
    for data in [&season1, &season2] {
        common::whaleid_json_in(dir.path(), &["import", "--catalog", c, data.to_str().unwrap(), "--json"]);
    }
    // Each photo: its path, hash and the individual of its crops.
    let catalogue_state = || {
        let cat = Catalogue::open(&cat_path).unwrap();
        cat.photos()
            .unwrap()
            .into_iter()
            .map(|p| {
                let individuals: Vec<Option<String>> = cat
                    .annotations_of_photo(p.id)
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let id = cat.identification(a.id).unwrap().map(|i| i.individual_id);
                        id.map(|id| cat.individual(id).unwrap().unwrap().code)
                    })
                    .collect();
                (p.id, (p.stored_path, p.facts.hash, individuals))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let before = catalogue_state();
    let stats_before = common::whaleid_json_in(dir.path(), &["stats", "--catalog", c, "--json"]);

    // The season's folder is archived under a new name, beside a photo the catalogue never had.
    let archive = dir.path().join("archive/2024");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::rename(&season1, archive.join("season1-moved")).unwrap();
    write(&archive.join("unrelated.jpg"), jpeg_bytes(&photo(77, 64, 48)));

    let report = common::whaleid_json_in(dir.path(), &["relink", "--catalog", c, archive.to_str().unwrap(), "--json"]);
    assert_eq!(
        (report["missing_before"].as_u64(), report["relinked"].as_u64(), report["still_missing"].as_u64()),
        (Some(3), Some(3), Some(0)),
        "{report}"
    );
    let after = catalogue_state();
    assert_eq!(after.len(), before.len(), "nothing added or removed");
    for (id, (old_path, hash, individuals)) in &before {
        let (new_path, new_hash, new_individuals) = &after[id];
        assert_eq!((new_hash, new_individuals), (hash, individuals), "photo {id}: content and identities kept");
        let expected = match old_path.strip_prefix("season1/") {
            Some(rest) => format!("archive/2024/season1-moved/{rest}"),
            None => old_path.clone(),
        };
        assert_eq!(new_path, &expected, "photo {id}");
        let cat = Catalogue::open(&cat_path).unwrap();
        let bytes = std::fs::read(cat.photo_file(new_path)).unwrap();
        assert_eq!(&whaleid::base::photo::hash_bytes(&bytes), hash, "{new_path} is that photo's file");
    }
    let stats_after = common::whaleid_json_in(dir.path(), &["stats", "--catalog", c, "--json"]);
    for key in ["photos", "annotations", "individuals", "identified_annotations", "species", "annotations_by_part"] {
        assert_eq!(stats_after[key], stats_before[key], "{key}");
    }
    let again = common::whaleid_json_in(dir.path(), &["relink", "--catalog", c, archive.to_str().unwrap(), "--json"]);
    assert_eq!((again["missing_before"].as_u64(), again["relinked"].as_u64()), (Some(0), Some(0)));
}

/// Eleven photos of four individuals, five of them tagged `role=query`: A, B and C have three
/// photos each, one of them a query; D has two, both queries.
fn query_tagged_dataset(data: &Path) {
    let individuals = ["A", "A", "A", "B", "B", "B", "C", "C", "C", "D", "D"];
    let queries = [0, 3, 6, 9, 10];
    common::photos(data, individuals.len() as u32, 56, 56);
    let rows: String = individuals
        .iter()
        .enumerate()
        .map(|(i, id)| format!("p{i:03}.jpg,{id},{}\n", if queries.contains(&i) { "query" } else { "" }))
        .collect();
    write(&data.join("labels.csv"), format!("image,individual_id,role\n{rows}"));
}

/// Photos tagged `role=query` (a `role` column in the labels) are the queries and only the
/// rest is the gallery: an individual seen only in queries has nothing to be found by.
#[test]
fn photos_tagged_role_query_are_searched_against_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    query_tagged_dataset(&data);
    let mut cat = imported(dir.path(), &data);

    let options = whaleid::jobs::eval::EvalOptions { batch: 8, open_set_fraction: 0.25, seed: 3, rerank: true };
    let r = whaleid::jobs::eval::evaluate_catalogue(&mut cat, &tiny(), &options, &Silent).unwrap();
    assert_eq!((r.labelled, r.individuals), (11, 4));
    assert_eq!(r.protocol, "5 photos tagged role=query against the rest");
    // Leave-one-out would ask all 11; D's two queries have no gallery photo of D.
    assert_eq!((r.closed_set.queries, r.pixel_baseline.queries), (3, 3));
    let open = r.open_set.expect("open set requested");
    assert_eq!(open.tuned.queries, 5, "only the tagged photos are queries");
    assert!(open.tuned.new_queries >= 2, "D is new to the gallery: {:?}", open.tuned);
}

/// Every loss the command line names parses, trains and is written in the model's card.
#[test]
fn every_documented_loss_name_trains_and_an_unknown_one_is_refused() {
    use clap::Parser;
    use whaleid::cli::{Cli, Command};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    labels_csv(&data, &pattern_photos(&data, 6, 4, 56));
    let cat = imported(dir.path(), &data);
    let embedder = tiny();
    for (name, kind) in [
        ("arcface", "arc_face"),
        ("subcenter", "sub_center_arc_face"),
        ("proxyanchor", "proxy_anchor"),
        ("triplet", "triplet"),
    ] {
        let cli = Cli::try_parse_from(["whaleid", "train", "--catalog", "c.whaleid", "--loss", name]).unwrap();
        let Some(Command::Train(args)) = cli.command else { panic!("{name}: not the train command") };
        let config = TrainConfig {
            loss: args.loss.expect("--loss read").config(),
            epochs: 1,
            batch: 8,
            blocks: vec![2],
            grid: 2,
            embedding_dim: 8,
            views: 1,
            refit: false,
            validation_fraction: 0.34,
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let (report, events) = train(&cat, &embedder, &config, &dir.path().join(name));
        assert_eq!(card(&report)["config"]["loss"]["kind"], kind, "{name}");
        let losses: Vec<f64> = events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::Epoch { loss, .. } => Some(*loss),
                _ => None,
            })
            .collect();
        assert!(losses.len() == 1 && losses[0].is_finite(), "{name}: one epoch with a loss: {losses:?}");
    }

    let out = common::whaleid_in(dir.path())
        .args(["train", "--catalog", dir.path().join("c.whaleid").to_str().unwrap(), "--loss", "focal"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "refused as a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'focal'") && err.contains("arcface, subcenter, proxyanchor, triplet"), "{err}");
    assert!(!dir.path().join("models").exists(), "nothing was trained");
}

/// A 12-block stand-in backbone whose features identify the individual at one depth only:
/// there every token is the photo's 4 x 4 grid of mean colours; at every other depth it is
/// noise drawn from a hash of the pixels (the same photo gives the same noise).
struct PlantedDepth {
    identifying: usize,
    device: candle_core::Device,
}

const PLANTED_WIDTH: usize = 48;

impl whaleid::models::Backbone for PlantedDepth {
    fn name(&self) -> &str {
        "planted"
    }
    fn depth(&self) -> usize {
        12
    }
    fn width(&self, _depth: usize) -> usize {
        PLANTED_WIDTH
    }
    fn input_multiple(&self) -> usize {
        14
    }
    fn device(&self) -> &candle_core::Device {
        &self.device
    }
    fn features(
        &self,
        images: &candle_core::Tensor,
        taps: &[whaleid::models::Tap],
    ) -> candle_core::Result<Vec<whaleid::models::Features>> {
        use rand::{Rng, SeedableRng};
        let (batch, _, side, _) = images.dims4()?;
        let grid = side / 14;
        let pixels = images.flatten_from(1)?.to_vec2::<f32>()?;
        let mut out = Vec::new();
        for tap in taps {
            let mut values = Vec::with_capacity(batch * (1 + grid * grid) * PLANTED_WIDTH);
            for image in &pixels {
                let token: Vec<f32> = if tap.depth() == self.identifying {
                    (0..PLANTED_WIDTH)
                        .map(|i| {
                            let (channel, square) = (i / 16, i % 16);
                            let (r0, c0) = (square / 4 * side / 4, square % 4 * side / 4);
                            let mut sum = 0.0;
                            for y in r0..r0 + side / 4 {
                                for x in c0..c0 + side / 4 {
                                    sum += image[channel * side * side + y * side + x];
                                }
                            }
                            sum / (side * side / 16) as f32
                        })
                        .collect()
                } else {
                    let hash = image
                        .iter()
                        .fold(tap.depth() as u64, |h, v| (h ^ v.to_bits() as u64).wrapping_mul(0x0100_0000_01b3));
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(hash);
                    (0..PLANTED_WIDTH).map(|_| rng.random_range(-2.0..2.0f32)).collect()
                };
                for _ in 0..1 + grid * grid {
                    values.extend_from_slice(&token);
                }
            }
            let tokens = candle_core::Tensor::from_vec(values, (batch, 1 + grid * grid, PLANTED_WIDTH), &self.device)?;
            out.push(whaleid::models::Features::with_global(tokens, grid, grid, 14)?);
        }
        Ok(out)
    }
    fn with_weights(
        &self,
        _: &std::collections::HashMap<String, candle_core::Tensor>,
    ) -> candle_core::Result<std::sync::Arc<dyn whaleid::models::Backbone>> {
        candle_core::bail!("the planted backbone has no weights")
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// With the identity planted at block 6, then at block 12, training chooses the depth whose
/// folds score best, trains the head on it and writes it in the card.
#[test]
fn training_chooses_the_depth_the_folds_favour_and_writes_it_in_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Enough individuals that noise cannot score near a depth that identifies them.
    labels_csv(&data, &pattern_photos(&data, 30, 3, 56));
    let cat = imported(dir.path(), &data);
    let mut chosen_per_case = Vec::new();
    for identifying in [6, 12] {
        let backbone = PlantedDepth { identifying, device: candle_core::Device::Cpu };
        let head = whaleid::models::Head::untrained(&candle_core::Device::Cpu).unwrap();
        let embedder = Embedder::from_parts(backbone, head, 56, format!("planted-{identifying}@56"));
        let config = TrainConfig {
            epochs: 1,
            batch: 8,
            grid: 2,
            embedding_dim: 8,
            views: 1,
            refit: false,
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let (report, _) = train(&cat, &embedder, &config, &dir.path().join(format!("head-{identifying}")));
        let scores = &report.depth_scores;
        let candidates: Vec<Vec<usize>> = scores.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(candidates, [vec![6], vec![9], vec![12], vec![9, 12]]);
        let best = scores.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert_eq!(report.blocks, best.0, "the best-scoring depth is trained on: {scores:?}");
        assert!(report.blocks.contains(&identifying), "block {identifying} identifies: {scores:?}");
        // Far apart, so no float rounding can reorder them.
        for (depths, score) in scores.iter().filter(|(d, _)| !d.contains(&identifying)) {
            assert!(best.1 > score + 0.3, "{depths:?} scored {score} beside {best:?}");
        }
        let card = card(&report);
        assert_eq!(card["config"]["blocks"], serde_json::json!(report.blocks));
        let trained =
            whaleid::models::Head::load(&report.checkpoint, PLANTED_WIDTH, &candle_core::Device::Cpu).unwrap();
        assert_eq!(trained.blocks, report.blocks, "the head reads the chosen depth");
        chosen_per_case.push(report.blocks.clone());
    }
    assert_ne!(chosen_per_case[0], chosen_per_case[1]);
}

/// Views cached per crop shrink as the catalogue grows: as many as fit 4,000, at most 4.
#[test]
fn a_large_catalogue_gets_fewer_augmented_views_per_crop() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = tiny();
    let config = TrainConfig {
        epochs: 1,
        batch: 64,
        blocks: vec![2],
        grid: 2,
        embedding_dim: 8,
        refit: false,
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    };
    assert_eq!(config.views, 0, "the default is automatic");
    let mut seen = Vec::new();
    for (crops, views) in [(40, 4), (1100, 3)] {
        let case = dir.path().join(format!("{crops}"));
        let named: Vec<(String, String)> = (0..crops)
            .map(|i| {
                let name = format!("p{i:04}.png");
                write(&case.join("images").join(&name), common::png_bytes(&photo(i as u32, 28, 28)));
                (name, format!("ID-{}", i / 4))
            })
            .collect();
        labels_csv(&case, &named);
        let mut cat = Catalogue::create(&case.join("c.whaleid")).unwrap();
        import(&mut cat, &case, &ImportOptions::default(), &Silent).unwrap();
        let (_, events) = train(&cat, &embedder, &config, &case.join("head"));
        let Some(TrainEvent::Started { views: started, .. }) = events.first().cloned() else {
            panic!("no Started event first")
        };
        assert_eq!(started, views, "{crops} crops");
        seen.push(started);
    }
    assert!(seen[1] < seen[0]);
}

// The commands below load a backbone, which the command line reads only from weights on
// disk: they run on the real weights at 56 px, and skip where those are absent.

/// `search --species/--part/--side` ranks only the crops that match, exactly: an unknown side
/// is compatible with either side.
#[test]
fn cli_search_restricts_the_candidates_to_the_species_part_and_side_asked() {
    let Some(weights) = common::real_weights() else { return };
    let w = weights.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("survey");
    common::photos(&data, 6, 64, 48);
    write(
        &data.join("labels.csv"),
        "image,individual_id,species,side,part\n\
         p000.jpg,A,humpback_whale,left,fluke\n\
         p001.jpg,A,humpback_whale,left,fluke\n\
         p002.jpg,B,humpback_whale,right,fluke\n\
         p003.jpg,C,bottlenose_dolphin,left,dorsal_fin\n\
         p004.jpg,D,bottlenose_dolphin,right,body\n\
         p005.jpg,E,right_whale,unknown,head\n",
    );
    let query = write(&dir.path().join("query.jpg"), std::fs::read(data.join("images/p000.jpg")).unwrap());
    let cat = dir.path().join("c.whaleid");
    let c = cat.to_str().unwrap();
    common::whaleid_json_in(dir.path(), &["import", "--catalog", c, data.to_str().unwrap(), "--json"]);
    let embedded =
        common::whaleid_json_in(dir.path(), &["embed", "--catalog", c, "--model", w, "--size", "56", "--json"]);
    assert_eq!(embedded["embedded"], 6, "{embedded}");

    let search = |filter: &[&str]| {
        let mut args = vec!["search", "--catalog", c, query.to_str().unwrap(), "--model", w, "--size", "56"];
        args.extend_from_slice(&["--top", "10", "--json"]);
        args.extend_from_slice(filter);
        let r = common::whaleid_json_in(dir.path(), &args);
        let mut found: Vec<String> =
            r["matches"].as_array().unwrap().iter().map(|m| m["individual"].as_str().unwrap().to_string()).collect();
        let first = found.first().cloned();
        found.sort();
        assert_eq!(r["searched_individuals"].as_u64(), Some(found.len() as u64), "{r}");
        (found, first)
    };
    let (all, first) = search(&[]);
    assert_eq!(all, ["A", "B", "C", "D", "E"]);
    assert_eq!(first.as_deref(), Some("A"), "the query is a copy of one of A's photos");
    assert_eq!(search(&["--species", "bottlenose_dolphin"]).0, ["C", "D"]);
    assert_eq!(search(&["--part", "fluke"]).0, ["A", "B"]);
    assert_eq!(search(&["--side", "right"]).0, ["B", "D", "E"]);
    assert_eq!(search(&["--species", "humpback_whale", "--side", "right"]).0, ["B"]);
}

/// `eval DATASET` imports the folder on its own and honours its `role=query` tags.
#[test]
fn cli_eval_of_a_dataset_folder_queries_the_photos_tagged_role_query() {
    let Some(weights) = common::real_weights() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    query_tagged_dataset(&data);
    let r = common::whaleid_json_in(
        dir.path(),
        &[
            "eval",
            data.to_str().unwrap(),
            "--model",
            weights.to_str().unwrap(),
            "--size",
            "56",
            "--open-set",
            "0.25",
            "--json",
        ],
    );
    assert_eq!(
        (r["photos"].as_u64(), r["labelled"].as_u64(), r["individuals"].as_u64()),
        (Some(11), Some(11), Some(4))
    );
    assert_eq!(r["protocol"], "5 photos tagged role=query against the rest");
    assert_eq!((r["closed_set"]["queries"].as_u64(), r["pixel_baseline"]["queries"].as_u64()), (Some(3), Some(3)));
    assert_eq!(r["open_set"]["tuned"]["queries"], 5);
    assert!(r["model"].as_str().unwrap().starts_with("dinov2_vits14@56"), "{r}");
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");
    assert!(!dir.path().join("data/eval.whaleid").exists(), "the dataset folder is left as it was");
}

/// The epochs a `train` run reported on stderr (`--json`: one JSON line per event).
fn epochs_run(stderr: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "epoch")
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect()
}

/// `train --resume DIR` goes on from the epoch after the saved best, with the saved weights
/// and the run's own settings, and refuses a catalogue whose labels changed; `models
/// activate` then makes the head the catalogue's model (undoably) and refuses a file that is
/// not a head.
#[test]
fn cli_train_resumes_from_the_saved_epoch_and_models_activate_switches_the_model() {
    let Some(weights) = common::real_weights() else { return };
    let w = weights.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    labels_csv(&data, &pattern_photos(&data, 6, 4, 56));
    let cat_path = dir.path().join("c.whaleid");
    let c = cat_path.to_str().unwrap();
    common::whaleid_json_in(dir.path(), &["import", "--catalog", c, data.to_str().unwrap(), "--json"]);
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--catalog", c, "--model", w, "--size", "56", "--out", r, "--json"];
        args.extend_from_slice(extra);
        let out = common::whaleid_in(dir.path()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), epochs_run(&out.stderr))
    };
    // One depth and no refit keep it quick; the resumed run must keep them too.
    let settings = write(&dir.path().join("train.toml"), "blocks = 12\nrefit = false\ngrid = 2\nembedding_dim = 32\n");
    let (first, epochs) = train(&["--config", settings.to_str().unwrap(), "--epochs", "2", "--loss", "subcenter"]);
    assert_eq!(epochs, [1, 2]);
    let best = first["best_epoch"].as_u64().unwrap();

    // Four epochs in all: the run goes on after its best with its own settings, none of
    // which are given again.
    let (resumed, epochs) = train(&["--epochs", "4", "--resume", r]);
    assert_eq!(epochs, (best + 1..=4).collect::<Vec<_>>(), "continued after epoch {best}");
    assert_eq!(resumed["epochs_run"], 4);
    let saved = first["best"]["closed_set"]["map5"].as_f64().unwrap();
    let loaded = resumed["before"]["closed_set"]["map5"].as_f64().unwrap();
    assert!((saved - loaded).abs() < 1e-9, "starts from the saved head: {saved} then {loaded}");
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("head.json")).unwrap()).unwrap();
    let config = &card["config"];
    assert_eq!(
        (&config["loss"]["kind"], &config["blocks"], &config["refit"], &config["embedding_dim"]),
        (
            &serde_json::json!("sub_center_arc_face"),
            &serde_json::json!([12]),
            &serde_json::json!(false),
            &serde_json::json!(32)
        ),
        "the resumed run keeps the first run's settings, not the defaults"
    );

    // Activation.
    let head = run.join("head.safetensors");
    let active = || whaleid::jobs::embed::active_head(&Catalogue::open(&cat_path).unwrap()).unwrap();
    let models = weights.parent().unwrap();
    let activate = |target: &Path| {
        common::whaleid_in(dir.path())
            .env("WHALEID_MODELS", models)
            .args(["models", "activate", "--catalog", c])
            .arg(target)
            .output()
            .unwrap()
    };
    let out = activate(&head);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/neck-"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(active(), Some(std::fs::canonicalize(&head).unwrap()));
    common::whaleid_json_in(dir.path(), &["undo", "--catalog", c, "--json"]);
    assert_eq!(active(), None, "activation is one undoable edit");
    common::whaleid_json_in(dir.path(), &["redo", "--catalog", c, "--json"]);
    assert!(active().is_some());
    let out = common::whaleid_in(dir.path()).args(["models", "activate", "--catalog", c, "--none"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(active(), None);
    let edits = Catalogue::open(&cat_path).unwrap().history(100).unwrap().len();
    let out = activate(&data.join("labels.csv"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("labels.csv"), "{err}");
    assert_eq!(active(), None, "a file that is not a head is not activated");
    assert_eq!(Catalogue::open(&cat_path).unwrap().history(100).unwrap().len(), edits);

    // Other labels: the saved run no longer matches the catalogue.
    {
        let mut cat = Catalogue::open(&cat_path).unwrap();
        let (a, b) =
            (cat.individual_by_code("ID-0").unwrap().unwrap(), cat.individual_by_code("ID-1").unwrap().unwrap());
        cat.merge_individuals(a.id, b.id).unwrap();
    }
    let out = common::whaleid_in(dir.path())
        .args(["train", "--catalog", c, "--model", w, "--size", "56", "--out", r, "--epochs", "5", "--resume", r])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other training data") && err.contains("head.json"), "{err}");
}

/// `search` on a catalogue nobody embedded computes what is missing first and searches every
/// crop, the photo's own individual first; `--neck` refuses the training state a run wrote
/// beside its head, naming it, and takes the head itself.
#[test]
fn cli_search_embeds_what_is_missing_and_neck_refuses_a_training_state() {
    let Some(weights) = common::real_weights() else { return };
    let w = weights.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth");
    let d = data.to_str().unwrap();
    let synth = ["synth", "--out", d, "--individuals", "3", "--images-per-individual", "2", "--seed", "5"];
    let out = common::whaleid_in(dir.path()).args(synth).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cat_path = dir.path().join("c.whaleid");
    let c = cat_path.to_str().unwrap();
    common::whaleid_json_in(dir.path(), &["import", "--catalog", c, d, "--json"]);
    let crops = Catalogue::open(&cat_path).unwrap().embedding_states("any").unwrap().len();
    assert_eq!(crops, 6);
    let labels = std::fs::read_to_string(data.join("labels.csv")).unwrap();
    let (image, individual) = labels.lines().nth(1).and_then(|l| l.split_once(',')).unwrap();
    let individual = individual.split(',').next().unwrap();
    let query = data.join("images").join(Path::new(image).file_name().unwrap());
    // The query's individual's other photo comes back from the field unidentified.
    let sibling = {
        let mut cat = Catalogue::open(&cat_path).unwrap();
        let query_name = query.file_name().unwrap().to_str().unwrap().to_string();
        let other = cat
            .identified_annotations()
            .unwrap()
            .into_iter()
            .filter(|(_, ind)| *ind == individual)
            .map(|(a, _)| a)
            .find(|&a| {
                let photo = cat.annotation(a).unwrap().unwrap().photo_id;
                !cat.photo(photo).unwrap().unwrap().stored_path.ends_with(&query_name)
            })
            .unwrap();
        cat.edit("test: forget the label", |e| e.unidentify(other)).unwrap();
        other
    };
    let search = |extra: &[&str]| {
        let mut args = vec!["search", "--catalog", c, "--model", w, "--size", "56", "--json"];
        args.extend_from_slice(extra);
        common::whaleid_in(dir.path()).args(&args).arg(&query).output().unwrap()
    };
    let out = search(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["searched_images"].as_u64(), Some(crops as u64 - 1), "every labelled crop: {r}");
    assert_eq!(r["matches"][0]["individual"], individual, "{r}");
    assert_eq!(r["unidentified"][0]["annotation"].as_i64(), Some(sibling.0), "its unnamed photo is nearest: {r}");
    // Each crop named comes with its photo, in the JSON and in the text.
    let sibling_photo = {
        let cat = Catalogue::open(&cat_path).unwrap();
        cat.photo(cat.annotation(sibling).unwrap().unwrap().photo_id).unwrap().unwrap().stored_path
    };
    assert_eq!(r["photos"][sibling.0.to_string()].as_str(), Some(sibling_photo.as_str()), "{r}");
    let best = r["matches"][0]["best_annotation"].as_i64().unwrap().to_string();
    assert!(r["photos"][best].as_str().is_some_and(|p| !p.is_empty()), "{r}");
    let text = common::whaleid_in(dir.path())
        .args(["search", "--catalog", c, "--model", w, "--size", "56"])
        .arg(&query)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("annotation {}, {sibling_photo}", sibling.0)), "{text}");

    // A short training run leaves a head and a training state side by side.
    let run = dir.path().join("run");
    let settings = write(&dir.path().join("train.toml"), "blocks = 2\nrefit = false\ngrid = 2\nembedding_dim = 8\n");
    let out = common::whaleid_in(dir.path())
        .args(["train", "--catalog", c, "--model", w, "--size", "56", "--epochs", "1", "--json", "--out"])
        .arg(&run)
        .arg("--config")
        .arg(&settings)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = run.join("train_state.safetensors");
    let out = search(&["--neck", state.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&state.display().to_string()) && err.contains("a training state, not a trained head"),
        "{err}"
    );
    let out = search(&["--neck", run.join("head.safetensors").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["searched_images"].as_u64(), Some(crops as u64 - 1), "every labelled crop: {r}");
}

/// Head training on a CNN (a tiny random EfficientNet, whose grids are not DINOv2's 14-pixel
/// patches) runs end to end and the trained head serves; a photo that cannot be read while the
/// tokens are cached is left out of that run only: once it is back, the next run trains on it.
#[test]
fn head_training_runs_on_an_efficientnet_and_a_photo_unreadable_while_caching_is_not_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (cat, data, named) = pattern_catalogue(dir.path(), 64);
    let embedder = Embedder::tiny_random_cnn().unwrap();
    let config = TrainConfig {
        epochs: 2,
        views: 1,
        validation_fraction: 0.34,
        seed: 1,
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    };
    let photo = data.join("images").join(&named[0].0);
    let away = dir.path().join("away.png");
    std::fs::rename(&photo, &away).unwrap();
    let crops = |events: &[TrainEvent]| {
        events.iter().find_map(|e| match e {
            TrainEvent::Started { train_crops, validation_crops, .. } => Some(train_crops + validation_crops),
            _ => None,
        })
    };
    let (first, events) = train(&cat, &embedder, &config, &dir.path().join("first"));
    assert_eq!(crops(&events), Some(17), "the unreadable photo is left out");
    assert!(
        first.depth_scores.iter().all(|(depths, _)| depths.iter().all(|&d| d <= 2)),
        "a CNN's own stages are tried: {:?}",
        first.depth_scores
    );
    std::fs::rename(&away, &photo).unwrap();
    let (second, events) = train(&cat, &embedder, &config, &dir.path().join("second"));
    assert_eq!(crops(&events), Some(18), "back, and trained on");

    let served = embedder.with_head_file(&second.checkpoint).unwrap();
    let input = whaleid::models::prepare(&whaleid::base::photo::decode_file(&photo).unwrap(), None, 64);
    let embedding = served.embed(&[input]).unwrap().remove(0);
    let norm: f32 = embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3 && served.key().starts_with("efficientnet_tiny@64/neck-"), "{norm}");
}

/// `last-blocks=1` and `full` on a CNN (a tiny random EfficientNet): the weights of the stages
/// asked for, and only those, are trained (each of them changes: it received a gradient)
/// and travel in the head file, and the embedder serves them.
#[test]
fn an_efficientnet_fine_tunes_its_last_stage_or_all_of_it_and_serves_the_tuned_weights() {
    use whaleid::models::TUNED_PREFIX;
    let dir = tempfile::tempdir().unwrap();
    let (cat, data, named) = pattern_catalogue(dir.path(), 64);
    let device = candle_core::Device::Cpu;
    let embedder = Embedder::tiny_random_cnn().unwrap();
    let pretrained: BTreeMap<String, candle_core::Tensor> = embedder.backbone().named_tensors().into_iter().collect();
    for (mode, tuned_blocks) in [("last-blocks=1", &["_blocks.1.", "_blocks.2."][..]), ("full", &[][..])] {
        let config = TrainConfig {
            mode: mode.parse().unwrap(),
            blocks: vec![2],
            epochs: 2,
            views: 1,
            // No validation individuals: the last epoch is kept, so the weights must have moved.
            validation_fraction: 0.0,
            refit: false,
            learning_rate: 1e-2,
            seed: 1,
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let (report, _) = train(&cat, &embedder, &config, &dir.path().join(mode));
        let tuned: BTreeMap<String, candle_core::Tensor> = candle_core::safetensors::load(&report.checkpoint, &device)
            .unwrap()
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix(TUNED_PREFIX).map(|n| (n.to_string(), t)))
            .collect();
        let trained: Vec<&String> = tuned.keys().filter(|n| !n.contains("running_")).collect();
        assert!(!trained.is_empty(), "{mode}: the tuned weights travel in the head file");
        for name in &trained {
            let expected = match mode {
                "full" => true,
                _ => {
                    tuned_blocks.iter().any(|b| name.starts_with(b))
                        || name.starts_with("_conv_head")
                        || name.starts_with("_bn1.")
                }
            };
            assert!(expected, "{mode}: {name} is not in the stages asked for");
            let change = (&tuned[*name] - &pretrained[*name]).unwrap().abs().unwrap().max_all().unwrap();
            assert!(change.to_scalar::<f32>().unwrap() > 0.0, "{mode}: {name} did not change");
        }
        if mode == "full" {
            assert!(trained.iter().any(|n| n.starts_with("_conv_stem")), "full trains the stem too");
        }
        let served = embedder.with_head_file(&report.checkpoint).unwrap();
        let photo = data.join("images").join(&named[0].0);
        let input = whaleid::models::prepare(&whaleid::base::photo::decode_file(&photo).unwrap(), None, 64);
        let mine = served.embed(std::slice::from_ref(&input)).unwrap().remove(0);
        let untuned = embedder.embed(&[input]).unwrap().remove(0);
        assert_ne!(mine, untuned, "{mode}: the tuned weights are used");
    }
}

/// `models activate --backbone` makes a backbone the catalogue's, as an edit that `undo`
/// takes back; an unknown name is refused by the command line with the names it knows.
#[test]
fn cli_models_activate_backbone_switches_the_catalogues_backbone_and_undo_takes_it_back() {
    use whaleid::models::KnownModel;
    let dir = tempfile::tempdir().unwrap();
    let cat_path = dir.path().join("c.whaleid");
    Catalogue::create(&cat_path).unwrap();
    let c = cat_path.to_str().unwrap();
    let backbone = || whaleid::jobs::embed::active_backbone(&Catalogue::open(&cat_path).unwrap()).unwrap();
    assert_eq!(backbone(), KnownModel::Dinov2Vits14);
    let out = common::whaleid_in(dir.path())
        .args(["models", "activate", "--catalog", c, "--backbone", "efficientnet-lite0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("backbone efficientnet-lite0 with the untrained head"), "{said}");
    assert_eq!(backbone(), KnownModel::EfficientnetLite0);
    common::whaleid_json_in(dir.path(), &["undo", "--catalog", c, "--json"]);
    assert_eq!(backbone(), KnownModel::Dinov2Vits14);
    let out = common::whaleid_in(dir.path())
        .args(["models", "activate", "--catalog", c, "--backbone", "resnet50"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("resnet50") && err.contains("efficientnet-lite2"), "{err}");
}
