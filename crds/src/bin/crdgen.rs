//! Prints the VirtualCluster CRD as YAML. `crds/virtualcluster.yaml` is this output, committed;
//! a test fails when the two differ.

fn main() {
    print!("{}", virtualcluster_crds::v1alpha1::crd_yaml());
}
