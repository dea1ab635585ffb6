//! Writes the files made from others (see `virtualcluster_tests::generated`): the chart's copies
//! of the CRD and of the operator's ClusterRole, and the README's field reference.

use anyhow::Context;
use virtualcluster_tests::generated;

fn main() -> anyhow::Result<()> {
    for file in generated::expected()? {
        let current = std::fs::read_to_string(&file.path).ok();
        if current.as_deref() == Some(file.contents.as_str()) {
            continue;
        }
        std::fs::write(&file.path, &file.contents)
            .with_context(|| format!("writing {}", file.path.display()))?;
        println!("updated {}", file.path.display());
    }
    Ok(())
}
