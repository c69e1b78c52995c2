//! The algorithms run on latent codes, independent of any model.
//!
//! - [`kmeans`]: k-means with k-means++ seeding and restarts.
//! - [`classify`]: k-nearest neighbours and multinomial logistic regression (L-BFGS).
//! - [`metrics`]: accuracy (with Hungarian matching for clusters), NMI, ARI.
//! - [`pca`]: principal components of the latent means.

pub mod classify;
pub mod kmeans;
pub mod metrics;
pub mod pca;
