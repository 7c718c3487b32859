//! The data-set file: any text is a `DataSet` or a JSON error; a data set is valid or a
//! `DataSetError`; a valid one loads into the memory store, whose export is valid again; a
//! parsed data set writes and reads back as itself.
#![no_main]

use cartflow::MemoryStore;
use cartflow::store::DataSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(set) = serde_json::from_slice::<DataSet>(data) else {
        return;
    };
    let text = serde_json::to_string(&set).expect("a data set serializes");
    let again: DataSet = serde_json::from_str(&text).expect("a written data set reads back");
    assert_eq!(again, set);
    let valid = set.validate();
    match MemoryStore::from_dataset(set) {
        Ok(store) => {
            assert_eq!(valid, Ok(()));
            let export = store.to_dataset();
            assert_eq!(
                export.validate(),
                Ok(()),
                "an exported data set must load again"
            );
        }
        Err(e) => assert_eq!(valid, Err(e)),
    }
});
