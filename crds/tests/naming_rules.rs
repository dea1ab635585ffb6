//! Properties of the host-name rule over generated names.

use std::collections::HashMap;

use proptest::prelude::*;
use virtualcluster_crds::dns;
use virtualcluster_crds::naming::host_name;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?"
}

/// Object names may be DNS subdomains: labels joined by dots.
fn object_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,3}"
}

proptest! {
    #[test]
    fn host_names_fit_and_are_stable(name in object_name(), namespace in label(), instance in label()) {
        let host = host_name(&name, &namespace, &instance);
        prop_assert!(host.len() <= dns::MAX_LABEL_LEN, "{} is {} characters", host, host.len());
        prop_assert!(!host.contains(".-"));
        prop_assert_eq!(&host, &host_name(&name, &namespace, &instance));
        if name.len() + namespace.len() + instance.len() + 6 <= dns::MAX_LABEL_LEN {
            prop_assert_eq!(host, format!("{name}-x-{namespace}-x-{instance}"));
        }
    }

    #[test]
    fn distinct_objects_get_distinct_host_names(objects in prop::collection::hash_set((object_name(), label()), 1..200), instance in label()) {
        let mut seen = HashMap::new();
        for (name, namespace) in &objects {
            let host = host_name(name, namespace, &instance);
            if let Some(other) = seen.insert(host.clone(), (name, namespace)) {
                // Only a real SHA-256 prefix collision or an identical joined name may clash.
                prop_assert_eq!(
                    format!("{}-x-{}", other.0, other.1),
                    format!("{name}-x-{namespace}"),
                    "{} and {:?} both became {}", name, other, host
                );
            }
        }
    }
}
