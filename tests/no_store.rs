//! Without the `store` feature (`--no-default-features`): no SQLite, the
//! profiler still measures in memory, and a profile asked to be stored says
//! why it was not, without touching the results.
#![cfg(not(feature = "store"))]

use parapipe::prelude::*;
use parapipe::profile::Profiler;

#[map_stage(workers = 2)]
fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn in_memory_profiles_work() {
    let mut results = pipe!(0..1000u64 | double)
        .profile_with(Profiler::new().in_memory())
        .results();
    let got: Vec<u64> = results.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), 1000);
    let profile = results.profile().expect("profiled");
    assert_eq!(profile.items(), 1000);
    assert!(profile.store_error().is_none());
    assert!(profile.run_id().is_none());
    assert_eq!(
        profile.stage("MainPipeline__double").unwrap().items_out,
        1000
    );
}

#[test]
fn asking_to_store_is_a_clear_error_in_the_profile() {
    let dir = std::env::temp_dir().join(format!("parapipe-no-store-{}", std::process::id()));
    let mut results = pipe!(0..1000u64 | double)
        .profile_with(Profiler::new().folder(&dir))
        .results();
    let got: Vec<u64> = results.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), 1000, "the results do not depend on the store");
    let profile = results.profile().expect("profiled");
    assert!(profile.run_id().is_none());
    let error = profile
        .store_error()
        .expect("the store's absence is reported");
    assert!(error.to_string().contains("`store` feature"), "{error}");
    assert!(!dir.join(parapipe::profile::DATABASE_FILE).exists());
}
