//! A volume's fixed shape: its id, page size and how many pages each protection group holds.

use protocol::record::{PAGE_BYTES_MAX, PAGE_BYTES_MIN};
use protocol::{PageId, PgId, PgRef, VolumeId};

/// Why a geometry is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    #[error("page size {0} is not a power of two in {PAGE_BYTES_MIN}..={PAGE_BYTES_MAX}")]
    PageSize(u32),
    #[error("pages per PG must be at least 1")]
    NoPagesPerPg,
}

/// See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeGeometry {
    pub volume: VolumeId,
    pub page_bytes: u32,
    pub pages_per_pg: u64,
}

impl VolumeGeometry {
    /// Checks the page size (a power of two in 512..=65536) and a non-zero PG size.
    pub fn new(
        volume: VolumeId,
        page_bytes: u32,
        pages_per_pg: u64,
    ) -> Result<VolumeGeometry, GeometryError> {
        let size_ok = page_bytes.is_power_of_two()
            && (PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&(page_bytes as usize));
        if !size_ok {
            return Err(GeometryError::PageSize(page_bytes));
        }
        if pages_per_pg == 0 {
            return Err(GeometryError::NoPagesPerPg);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_geometry_is_refused_for_what_is_wrong_with_it() {
        assert_eq!(VolumeGeometry::new(VolumeId(1), 4000, 8), Err(GeometryError::PageSize(4000)));
        assert_eq!(VolumeGeometry::new(VolumeId(1), 256, 8), Err(GeometryError::PageSize(256)));
        assert_eq!(VolumeGeometry::new(VolumeId(1), 4096, 0), Err(GeometryError::NoPagesPerPg));
        let geometry = VolumeGeometry::new(VolumeId(1), 4096, 8).unwrap();
        assert_eq!(geometry.pg_of(PageId(17)), PgId(2));
    }
}
