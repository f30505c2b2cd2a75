//! The biologist's vocabulary: parts, sides, review states, boxes.
//!
//! Each enum is stored in the catalogue as its lower-case name; `as_str` and
//! `FromStr` are the single mapping between the two.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let wanted = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
                match wanted.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} '{}' (expected one of: {})",
                        stringify!($name).to_ascii_lowercase(),
                        s,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// The body part an annotation shows; matching is done within a part.
    Part { Fluke => "fluke", DorsalFin => "dorsal_fin", Head => "head", Body => "body" }
);

text_enum!(
    /// Which side of the animal is seen (flukes are usually `unknown`/ventral).
    Side { Left => "left", Right => "right", Unknown => "unknown" }
);

text_enum!(
    /// Where an annotation came from.
    Source { Manual => "manual", Detector => "detector", Imported => "imported" }
);

text_enum!(
    /// The review state of an annotation.
    Status { Unreviewed => "unreviewed", Verified => "verified", Rejected => "rejected" }
);

text_enum!(
    /// How an annotation got its individual.
    How { Confirmed => "confirmed", Imported => "imported", Predicted => "predicted" }
);

/// Whether a box is a detector's proposal that nobody has reviewed yet.
pub fn is_proposal(source: Source, status: Status) -> bool {
    source == Source::Detector && status == Status::Unreviewed
}

/// Whether a box is shown when proposals scoring under `threshold` are hidden: anything but a
/// proposal is; a proposal is when its score reaches the threshold (or it has no score to compare).
pub fn shown_at(threshold: Hundredths, source: Source, status: Status, score: Option<f64>) -> bool {
    !is_proposal(source, status) || score.is_none_or(|s| threshold.reached_by(s))
}

/// A detector's confidence as people read it and filter by it: in whole hundredths, rounded
/// down, so that a box shown as 0.60 passes a 0.60 threshold and one shown as 0.59 does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hundredths(pub i64);

impl Hundredths {
    /// A score, rounded down (the tolerance absorbs `0.83 * 100` landing a hair under 83).
    pub fn of(score: f64) -> Hundredths {
        Hundredths((score * 100.0 + 1e-9).floor() as i64)
    }

    /// A threshold chosen on a slider, to the nearest hundredth.
    pub fn nearest(value: f64) -> Hundredths {
        Hundredths((value * 100.0).round() as i64)
    }

    pub fn value(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// Whether a score reaches this threshold.
    pub fn reached_by(self, score: f64) -> bool {
        Hundredths::of(score) >= self
    }
}

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.value())
    }
}

impl Part {
    /// The part photographed for identification in a species, when a file does not say.
    pub fn usual_for_species(species: &str) -> Part {
        let s = species.to_ascii_lowercase();
        if s.contains("humpback") || s.contains("sperm") {
            Part::Fluke
        } else if s.contains("right_whale") || s.contains("right whale") {
            Part::Head
        } else if s.contains("dolphin")
            || s.contains("orca")
            || s.contains("killer")
            || s.contains("pilot")
            // Happywhale's labels spell these `bottlenose_dolpin`, `kiler_whale` and `globis`
            // (Globicephala, the pilot whales).
            || s.contains("dolpin")
            || s.contains("kiler")
            || s.contains("globis")
            || s.contains("minke")
            || s.contains("fin_whale")
            || s.contains("porpoise")
        {
            Part::DorsalFin
        } else {
            Part::Body
        }
    }
}

/// An axis-aligned box in photo pixels (after EXIF orientation), top-left origin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxPx {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// What happened when a box was fitted into its photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fit {
    Inside(BoxPx),
    Clipped(BoxPx),
    Outside,
}

impl BoxPx {
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Self {
        BoxPx { x, y, w, h }
    }

    /// From a YOLO line's normalised centre/size.
    pub fn from_yolo(cx: f64, cy: f64, w: f64, h: f64, width: u32, height: u32) -> Self {
        let (pw, ph) = (width as f64, height as f64);
        BoxPx { x: (cx - w / 2.0) * pw, y: (cy - h / 2.0) * ph, w: w * pw, h: h * ph }
    }

    /// Normalised centre/size for a YOLO line.
    pub fn to_yolo(&self, width: u32, height: u32) -> [f64; 4] {
        let (pw, ph) = (width as f64, height as f64);
        [(self.x + self.w / 2.0) / pw, (self.y + self.h / 2.0) / ph, self.w / pw, self.h / ph]
    }

    pub fn whole(width: u32, height: u32) -> Self {
        BoxPx { x: 0.0, y: 0.0, w: width as f64, h: height as f64 }
    }

    pub fn area(&self) -> f64 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    pub fn iou(&self, other: &BoxPx) -> f64 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// Fits the box into a `width` x `height` photo: boxes partly outside are clipped,
    /// boxes with no area inside (or non-finite numbers) are `Outside`.
    pub fn fit(&self, width: u32, height: u32) -> Fit {
        if ![self.x, self.y, self.w, self.h].iter().all(|v| v.is_finite()) || self.w <= 0.0 || self.h <= 0.0 {
            return Fit::Outside;
        }
        let (pw, ph) = (width as f64, height as f64);
        let x0 = self.x.clamp(0.0, pw);
        let y0 = self.y.clamp(0.0, ph);
        let x1 = (self.x + self.w).clamp(0.0, pw);
        let y1 = (self.y + self.h).clamp(0.0, ph);
        if x1 - x0 < 1.0 || y1 - y0 < 1.0 {
            return Fit::Outside;
        }
        let fitted = BoxPx { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
        // Sub-pixel differences come from rounding in the files, not from a box that is off the photo.
        if (fitted.x - self.x).abs() < 0.5
            && (fitted.y - self.y).abs() < 0.5
            && (fitted.w - self.w).abs() < 1.0
            && (fitted.h - self.h).abs() < 1.0
        {
            Fit::Inside(fitted)
        } else {
            Fit::Clipped(fitted)
        }
    }
}

impl fmt::Display for BoxPx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[x {:.1}, y {:.1}, w {:.1}, h {:.1}]", self.x, self.y, self.w, self.h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text() {
        for p in Part::ALL {
            assert_eq!(p.as_str().parse::<Part>().unwrap(), *p);
        }
        assert_eq!("Dorsal-Fin".parse::<Part>().unwrap(), Part::DorsalFin);
        assert!("tail".parse::<Part>().unwrap_err().contains("expected one of"));
    }

    #[test]
    fn the_part_follows_the_species_as_happywhale_spells_it() {
        for (species, part) in [
            ("humpback_whale", Part::Fluke),
            ("bottlenose_dolphin", Part::DorsalFin),
            ("bottlenose_dolpin", Part::DorsalFin),
            ("kiler_whale", Part::DorsalFin),
            ("globis", Part::DorsalFin),
            ("short_finned_pilot_whale", Part::DorsalFin),
            ("right_whale", Part::Head),
            ("beluga", Part::Body),
        ] {
            assert_eq!(Part::usual_for_species(species), part, "{species}");
        }
    }

    #[test]
    fn boxes_partly_outside_are_clipped_and_boxes_fully_outside_refused() {
        assert_eq!(BoxPx::new(10.0, 10.0, 20.0, 20.0).fit(100, 100), Fit::Inside(BoxPx::new(10.0, 10.0, 20.0, 20.0)));
        assert_eq!(BoxPx::new(-10.0, 90.0, 20.0, 20.0).fit(100, 100), Fit::Clipped(BoxPx::new(0.0, 90.0, 10.0, 10.0)));
        assert_eq!(BoxPx::new(200.0, 10.0, 20.0, 20.0).fit(100, 100), Fit::Outside);
        assert_eq!(BoxPx::new(f64::NAN, 10.0, 20.0, 20.0).fit(100, 100), Fit::Outside);
        assert_eq!(BoxPx::new(1.0, 1.0, 0.0, 20.0).fit(100, 100), Fit::Outside);
    }

    #[test]
    fn a_score_reads_and_compares_in_the_hundredths_it_is_shown_with() {
        assert_eq!(Hundredths::of(0.83).to_string(), "0.83");
        assert_eq!(Hundredths::of(0.8399).to_string(), "0.83", "rounded down, not up");
        assert_eq!(Hundredths::nearest(0.6).to_string(), "0.60");
        let threshold = Hundredths::nearest(0.6);
        assert!(threshold.reached_by(0.6), "a score shown as the threshold passes it");
        assert!(threshold.reached_by(0.60001));
        assert!(!threshold.reached_by(0.5999), "shown as 0.59, it does not");
        assert!(Hundredths::nearest(0.0).reached_by(0.0));
        assert_eq!(Hundredths::of(f64::NAN), Hundredths(0), "a damaged score reads as 0, not a panic");
        assert!(is_proposal(Source::Detector, Status::Unreviewed));
        assert!(!is_proposal(Source::Detector, Status::Verified));
        assert!(!is_proposal(Source::Manual, Status::Unreviewed));
        let t = Hundredths::nearest(0.5);
        assert!(!shown_at(t, Source::Detector, Status::Unreviewed, Some(0.4)), "a doubtful proposal is hidden");
        assert!(shown_at(t, Source::Detector, Status::Unreviewed, Some(0.5)));
        assert!(shown_at(t, Source::Detector, Status::Verified, Some(0.4)), "a reviewed box always shows");
        assert!(shown_at(t, Source::Detector, Status::Unreviewed, None), "nothing to compare, nothing hidden");
    }

    #[test]
    fn yolo_coordinates_round_trip() {
        let b = BoxPx::from_yolo(0.5, 0.25, 0.2, 0.1, 200, 100);
        assert_eq!(b, BoxPx::new(80.0, 20.0, 40.0, 10.0));
        assert_eq!(b.to_yolo(200, 100), [0.5, 0.25, 0.2, 0.1]);
        assert!((b.iou(&b) - 1.0).abs() < 1e-12);
    }
}
