//! A volume's fixed shape: its id, page size and how many pages each protection group holds.

use protocol::record::{PAGE_BYTES_MAX, PAGE_BYTES_MIN};
use protocol::{PageId, PgId, PgRef, VolumeId};

/// See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeGeometry {
    pub volume: VolumeId,
    pub page_bytes: u32,
    pub pages_per_pg: u64,
}

impl VolumeGeometry {
    /// Checks the page size (a power of two in 512..=65536) and a non-zero PG size.
    pub fn new(volume: VolumeId, page_bytes: u32, pages_per_pg: u64) -> Result<VolumeGeometry, String> {
        let size_ok = page_bytes.is_power_of_two()
            && (PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&(page_bytes as usize));
        if !size_ok {
            return Err(format!(
                "page size {page_bytes} is not a power of two in {PAGE_BYTES_MIN}..={PAGE_BYTES_MAX}"
            ));
        }
        if pages_per_pg == 0 {
            return Err("pages per PG must be at least 1".into());
        }
        Ok(VolumeGeometry { volume, page_bytes, pages_per_pg })
    }

    /// The PG holding `page`.
    pub fn pg_of(&self, page: PageId) -> PgId {
        PgId(u32::try_from(page.0 / self.pages_per_pg).unwrap_or(u32::MAX))
    }

    pub fn pg_ref(&self, pg: PgId) -> PgRef {
        PgRef { volume_id: self.volume, pg_id: pg }
    }
}
