//! Ids of the catalogue's records: one type each, so that a photo's id can never be passed
//! where an annotation's or an individual's is meant. Serialised as the bare number.

macro_rules! record_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

record_id!(
    /// A photo of the catalogue.
    PhotoId
);
record_id!(
    /// An annotation: a box (or the whole photo) showing one animal.
    AnnotationId
);
record_id!(
    /// An individual animal.
    IndividualId
);
