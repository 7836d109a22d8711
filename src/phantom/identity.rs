//! The identifying data a real archive carries, planted on purpose so that `pack`'s
//! de-identification can be checked: names, IDs, dates, institution, physicians, free text.
//! Everything here is fiction drawn from the seed; `planted()` lists every string that must vanish.

use super::seed::stream_rng;
use rand::seq::SliceRandom;
use rand::Rng;

const FAMILY_NAMES: &[&str] = &[
    "ABERNATHY",
    "BALDWIN",
    "CARRINGTON",
    "DELACROIX",
    "EVERETT",
    "FAIRWEATHER",
    "GALLAGHER",
    "HOLLOWAY",
    "INGRAM",
    "JANSSEN",
    "KOWALCZYK",
    "LINDQVIST",
    "MONTGOMERY",
    "NAKAMURA",
    "OKONKWO",
    "PEMBERTON",
    "QUINTERO",
    "ROSENTHAL",
    "SANTANGELO",
    "THORNBURY",
    "UNDERWOOD",
    "VASQUEZ",
    "WHITTAKER",
    "YAMAMOTO",
    "ZIELINSKI",
    "ACHTERBERG",
    "BRANNIGAN",
    "CASTELLANOS",
    "DUNWOODY",
    "ESPOSITO",
    "FITZGERALD",
    "GRUNEWALD",
    "HAVERSHAM",
    "IVANOVA",
    "JORGENSEN",
    "KIRKPATRICK",
];
const GIVEN_NAMES_F: &[&str] = &[
    "MARGARET",
    "EVELYN",
    "HARRIET",
    "ROSALIND",
    "BEATRICE",
    "CORNELIA",
    "DOROTHEA",
    "GWENDOLYN",
    "ISADORA",
    "JOSEPHINE",
    "LUCINDA",
    "MATILDA",
    "PHILIPPA",
    "THEODORA",
    "WILHELMINA",
    "AGNES",
];
const GIVEN_NAMES_M: &[&str] = &[
    "ALBERT",
    "BARNABY",
    "CORNELIUS",
    "DESMOND",
    "EZEKIEL",
    "FREDERICK",
    "GILBERT",
    "HORATIO",
    "IGNATIUS",
    "JEREMIAH",
    "LEOPOLD",
    "MORTIMER",
    "NATHANIEL",
    "OSWALD",
    "PERCIVAL",
    "RUPERT",
];
const INSTITUTIONS: &[&str] = &[
    "NORTHFIELD GENERAL HOSPITAL",
    "ST ALDHELM UNIVERSITY MEDICAL CENTRE",
    "LAKESHORE REGIONAL CLINIC",
    "MERIDIAN HEART AND LUNG INSTITUTE",
    "HARBOURVIEW COMMUNITY HOSPITAL",
    "WESTBROOK VETERANS MEDICAL CENTER",
];
const PHYSICIAN_FAMILY_NAMES: &[&str] = &[
    "ASHWORTH",
    "BLACKWOOD",
    "CRANSTON",
    "DRUMMOND",
    "ELLSWORTH",
    "FORTESCUE",
    "GRIMSHAW",
    "HARGREAVES",
    "LOCKHART",
    "MACALLISTER",
    "PRENDERGAST",
    "WAINWRIGHT",
];
const PHYSICIAN_GIVEN_NAMES: &[&str] = &[
    "ADRIAN", "BRIDGET", "CLEMENT", "DAPHNE", "EDMUND", "FIONA", "GERALD", "HELENA", "LIONEL",
];

/// Screening cohorts are aged 50-80; drawn uniformly within this range (years at the CT).
const AGE_RANGE_YEARS: std::ops::Range<i64> = 55..80;
/// CTs are spread over these years of acquisition.
const FIRST_STUDY_YEAR: i64 = 2017;
const STUDY_SPREAD_DAYS: i64 = 6 * 365;
/// The radiograph precedes the CT by up to this many days (the usual referral path).
const RADIOGRAPH_LEAD_DAYS: i64 = 60;
/// Distinct medical record numbers: a stride coprime with this modulus keeps IDs unique.
const MRN_MODULUS: u64 = 10_000_000;
const MRN_STRIDE: u64 = 7_919;
const MAX_PATIENTS: u64 = MRN_MODULUS;

/// A civil date; formatted as DICOM DA (YYYYMMDD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date {
    pub days_since_epoch: i64, // days since 1970-01-01
}

impl Date {
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Date {
        // Howard Hinnant's days_from_civil.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = month as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Date {
            days_since_epoch: era * 146_097 + doe - 719_468,
        }
    }

    pub fn ymd(self) -> (i64, u32, u32) {
        // Howard Hinnant's civil_from_days.
        let z = self.days_since_epoch + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
        (year, month, day)
    }

    pub fn plus_days(self, days: i64) -> Date {
        Date {
            days_since_epoch: self.days_since_epoch + days,
        }
    }

    pub fn dicom(self) -> String {
        let (y, m, d) = self.ymd();
        format!("{y:04}{m:02}{d:02}")
    }

    /// Whole years from `birth` to `self`, as DICOM AS (`067Y`) would state them.
    pub fn age_years_since(self, birth: Date) -> i64 {
        let (y1, m1, d1) = self.ymd();
        let (y0, m0, d0) = birth.ymd();
        y1 - y0 - i64::from((m1, d1) < (m0, d0))
    }
}

/// A person name in both the DICOM PN form and the way free text writes it.
#[derive(Clone, Debug)]
pub(crate) struct PersonName {
    pub family: &'static str,
    pub given: &'static str,
}

impl PersonName {
    /// `FAMILY^GIVEN`, the PN value.
    pub fn dicom(&self) -> String {
        format!("{}^{}", self.family, self.given)
    }
    /// `Given Family`, as a clerk types it into a comment.
    pub fn prose(&self) -> String {
        format!("{} {}", title_case(self.given), title_case(self.family))
    }
}

fn title_case(upper: &str) -> String {
    let mut chars = upper.chars();
    chars
        .next()
        .map(|c| c.to_string() + &chars.as_str().to_lowercase())
        .unwrap_or_default()
}

#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub name: PersonName,
    pub sex: char, // 'F' | 'M'
    pub patient_id: String,
    pub birth_date: Date,
    pub ct_date: Date,
    pub radiograph_date: Date,
    pub ct_accession: String,
    pub radiograph_accession: String,
    pub institution: &'static str,
    pub referring: PersonName,
    pub performing: PersonName,
    pub operator: PersonName,
}

impl Identity {
    pub fn sample(seed: u64, patient: u32) -> Identity {
        assert!(
            u64::from(patient) < MAX_PATIENTS,
            "the phantom numbers at most {MAX_PATIENTS} patients"
        );
        let mut rng = stream_rng(seed, "identity", patient);
        let sex = if rng.gen_bool(0.5) { 'F' } else { 'M' };
        let given_names = if sex == 'F' { GIVEN_NAMES_F } else { GIVEN_NAMES_M };
        let name = PersonName {
            family: pick(&mut rng, FAMILY_NAMES),
            given: pick(&mut rng, given_names),
        };
        let mrn_base = seed % MRN_MODULUS;
        let mrn = (mrn_base + u64::from(patient) * MRN_STRIDE) % MRN_MODULUS;
        let ct_date = Date::from_ymd(FIRST_STUDY_YEAR, 1, 1).plus_days(rng.gen_range(0..STUDY_SPREAD_DAYS));
        let age_days = rng.gen_range(AGE_RANGE_YEARS) * 365 + rng.gen_range(0..365);
        let mut physician = || PersonName {
            family: pick(&mut rng, PHYSICIAN_FAMILY_NAMES),
            given: pick(&mut rng, PHYSICIAN_GIVEN_NAMES),
        };
        let (referring, performing, operator) = (physician(), physician(), physician());
        Identity {
            name,
            sex,
            patient_id: format!("MRN{mrn:07}"),
            birth_date: ct_date.plus_days(-age_days),
            ct_date,
            radiograph_date: ct_date.plus_days(-rng.gen_range(1..=RADIOGRAPH_LEAD_DAYS)),
            ct_accession: format!("ACC{:09}", rng.gen_range(0..1_000_000_000u64)),
            radiograph_accession: format!("ACC{:09}", rng.gen_range(0..1_000_000_000u64)),
            institution: pick(&mut rng, INSTITUTIONS),
            referring,
            performing,
            operator,
        }
    }

    /// DICOM AS at the CT, e.g. `067Y`.
    pub fn age_at(&self, date: Date) -> String {
        format!("{:03}Y", date.age_years_since(self.birth_date))
    }

    /// The patient's folder: real exports name folders after the patient.
    pub fn folder_name(&self) -> String {
        format!("{}_{}_{}", self.patient_id, self.name.family, self.name.given)
    }

    /// Free text as a technologist writes it: the name and MRN leak into comments.
    pub fn image_comment(&self) -> String {
        format!(
            "Pt {} (MRN {}) seen by Dr {}; call {} with results",
            self.name.prose(),
            self.patient_id,
            self.referring.prose(),
            self.referring.prose()
        )
    }

    /// StudyDescription (LO, at most 64 characters) with the patient's name in it.
    pub fn study_description(&self, what: &str) -> String {
        let text = format!("{what} {}", self.name.prose());
        text.chars().take(64).collect()
    }

    /// Every identifying string planted for this patient, including the private tag value
    /// (the patient ID) and the folder name.
    pub fn planted(&self) -> Vec<String> {
        let mut out = vec![
            self.name.dicom(),
            self.name.prose(),
            self.patient_id.clone(),
            self.folder_name(),
            self.birth_date.dicom(),
            self.ct_date.dicom(),
            self.radiograph_date.dicom(),
            self.ct_accession.clone(),
            self.radiograph_accession.clone(),
            self.institution.to_string(),
            self.image_comment(),
            self.study_description(CT_STUDY_TEXT),
            self.study_description(RADIOGRAPH_STUDY_TEXT),
        ];
        out.extend([&self.referring, &self.performing, &self.operator].map(PersonName::dicom));
        // Only the referring physician is named in free text too.
        out.push(self.referring.prose());
        out
    }
}

/// Start of the CT StudyDescription (the patient's name follows).
pub(crate) const CT_STUDY_TEXT: &str = "LDCT LUNG SCREENING";
/// Start of the radiograph StudyDescription.
pub(crate) const RADIOGRAPH_STUDY_TEXT: &str = "CHEST PA";

fn pick<R: Rng>(rng: &mut R, list: &'static [&'static str]) -> &'static str {
    list.choose(rng).expect("name lists are not empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_known_dates() {
        // Reference values: `date -d 2024-02-29 +%s` / 86400 = 19782; 2000-03-01 = 11017.
        assert_eq!(Date::from_ymd(1970, 1, 1).days_since_epoch, 0);
        assert_eq!(Date::from_ymd(2024, 2, 29).days_since_epoch, 19_782);
        assert_eq!(Date::from_ymd(2000, 3, 1).days_since_epoch, 11_017);
        assert_eq!(
            Date {
                days_since_epoch: 19_782
            }
            .dicom(),
            "20240229"
        );
        assert_eq!(Date { days_since_epoch: -1 }.dicom(), "19691231");
        for d in -40_000..40_000 {
            let (y, m, dd) = Date { days_since_epoch: d }.ymd();
            assert_eq!(Date::from_ymd(y, m, dd).days_since_epoch, d);
        }
    }

    #[test]
    fn ages_count_whole_years() {
        let birth = Date::from_ymd(1950, 6, 15);
        assert_eq!(Date::from_ymd(2020, 6, 14).age_years_since(birth), 69);
        assert_eq!(Date::from_ymd(2020, 6, 15).age_years_since(birth), 70);
    }

    #[test]
    fn patient_ids_are_unique_and_identities_fit_dicom() {
        let ids: std::collections::HashSet<String> =
            (0..2000).map(|p| Identity::sample(9, p).patient_id).collect();
        assert_eq!(ids.len(), 2000);
        let id = Identity::sample(9, 3);
        assert!(id.study_description(CT_STUDY_TEXT).len() <= 64);
        assert!(id.planted().iter().all(|s| !s.is_empty()));
        let age: i64 = id.age_at(id.ct_date)[..3].parse().unwrap();
        assert!(
            AGE_RANGE_YEARS.contains(&age) || age == AGE_RANGE_YEARS.end,
            "age {age}"
        );
    }
}
