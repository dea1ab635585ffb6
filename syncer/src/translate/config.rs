//! ConfigMaps and Secrets: copied whole.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::Target;

pub fn host_config_map(cm: &ConfigMap, target: &Target) -> ConfigMap {
    ConfigMap {
        metadata: target.copy_meta(&cm.metadata),
        data: cm.data.clone(),
        binary_data: cm.binary_data.clone(),
        immutable: cm.immutable,
    }
}

pub fn host_secret(secret: &Secret, target: &Target) -> Secret {
    // A service-account token Secret on the host would be filled by the host's token
    // controller with a host token; its virtual content is what the pod needs.
    let type_ = secret
        .type_
        .clone()
        .filter(|t| t != "kubernetes.io/service-account-token")
        .or_else(|| secret.type_.as_ref().map(|_| "Opaque".to_owned()));
    Secret {
        metadata: target.copy_meta(&secret.metadata),
        data: secret.data.clone(),
        string_data: None,
        type_,
        immutable: secret.immutable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::target;

    #[test]
    fn token_secrets_are_copied_as_opaque() {
        let secret = Secret {
            type_: Some("kubernetes.io/service-account-token".into()),
            ..Default::default()
        };
        assert_eq!(
            host_secret(&secret, &target()).type_.as_deref(),
            Some("Opaque")
        );
        let tls = Secret {
            type_: Some("kubernetes.io/tls".into()),
            ..Default::default()
        };
        assert_eq!(
            host_secret(&tls, &target()).type_.as_deref(),
            Some("kubernetes.io/tls")
        );
    }
}
