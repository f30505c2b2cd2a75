//! Training the embedding head: metric-learning losses and batch samplers.

pub mod loss;
pub mod sampler;

pub use loss::{
    ArcFace, ArcFaceConfig, BatchHardTriplet, DynamicMargin, LossConfig, LossError, MetricLoss, ProxyAnchor,
    ProxyAnchorConfig, SubCenterArcFace, SubCenterArcFaceConfig, TripletConfig, TripletDistance, build, l2_normalize,
};
pub use sampler::{BatchSampler, PkSampler, SamplerError, ShuffledSampler};
