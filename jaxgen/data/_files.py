"""Where the shipped datasets live, what their files must hash to, and the verification that guards every loader.

Private module: loaders in :mod:`jaxgen.data` call :func:`dataset_files`, which resolves a dataset folder, checks
that the requested files exist, and verifies their size and sha256 against the constants below (copied from each
folder's ``SOURCE.md``) *before* anything is parsed. :func:`list_datasets` and :func:`verify_datasets` are public
(re-exported by :mod:`jaxgen.data`) and back the ``jaxgen data list|verify`` command.

Data root resolution, per dataset (the first candidate ``<root>/<dataset>/`` that is a directory wins):
  1. the ``data_dir`` argument of a loader, if given -- it overrides everything, nothing else is searched;
  2. ``$JAXGEN_DATA``, if set and non-empty;
  3. ``shared/data`` beside the repository, i.e. ``Path(jaxgen.__file__).parents[2] / "shared" / "data"``;
  4. ``shared/data`` in the parent of the current working directory (``Path.cwd().parent / "shared" / "data"``).
Because resolution is per dataset, ``$JAXGEN_DATA`` may hold only some datasets; the others are still found in the
shared folder.

Verification cache: a successful sha256 check is remembered for the process, keyed by (resolved path, mtime_ns, size,
expected digest), so repeated loads do not re-hash tens of megabytes. Failed checks are never cached, and
:func:`verify_datasets` always re-hashes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jaxgen

ENV_VAR = "JAXGEN_DATA"

PathLike = str | os.PathLike


class DatasetInfo(NamedTuple):
  """Static description of one shipped dataset folder."""

  name: str  # folder name under the data root
  description: str
  sources: tuple[str, ...]  # canonical upstream locations (from SOURCE.md)
  files: Mapping[str, tuple[int, str]]  # path relative to the folder -> (bytes, sha256 hex)
  # Files that may legitimately be absent; path -> ("git-blob-sha1", id). Checked only when present.
  optional_files: Mapping[str, tuple[str, str]] = {}


# (bytes, sha256) of every data file, copied from the SOURCE.md of each folder.
_FILES: dict[str, dict[str, tuple[int, str]]] = {
    "mnist": {
        "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    },
    "fashion_mnist": {
        "t10k-images-idx3-ubyte.gz": (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        "train-images-idx3-ubyte.gz": (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    },
    "omniglot": {
        "all_runs.zip": (352787, "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"),
        "alphabets.csv": (3378, "ee24b46b10d9bbf4a855d8ba81c252634b0db02f7a0f2e16eeb33785617ddfb3"),
        "images_background.npz": (3340794, "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199"),
        "images_evaluation.npz": (2415269, "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276"),
        "vinyals_splits/test.txt": (50372, "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204"),
        "vinyals_splits/train.txt": (133244, "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0"),
        "vinyals_splits/trainval.txt": (154556, "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a"),
        "vinyals_splits/val.txt": (21312, "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a"),
    },
    "tinyshakespeare": {
        "README.md": (607, "d21f83e40632eb41414f8869d6c64550da758ed5853ed57dcf85357c8e626c15"),
        "input.txt": (1115394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    },
    "sachs": {
        "ground_truth_17_edges.csv": (156, "dc81b29958204effeea020aa7e046f133bf5bfca33c2dd435a1e5654b61e7c80"),
        "sachs.2005.ground.truth.graph.txt": (391, "2406ec0f9cd34bcbcd33fb74282386232330a630dba68c0f2d01a0d985a652b9"),
        "sachs.bif": (6264, "5dc587dbd360a84289e0951db9daba417441b3d541e79af7d87dae45e5d93c05"),
        "sachs_cd3cd28.csv": (45281, "aac4b9b4cae40439fd21444440d5ba3858510c078d19a54d8583e181a4053ce5"),
    },
    "credit": {
        "german/german.data": (79794, "e2bc10785808eeb5e30462f0805edb73a672f295bc671dec0bca6e2fb5c8e1ca"),
        "german/german.doc": (4679, "69b92cb551111bc37098698288849c96f0fd87ce81a2e54451ff39aa1e53fe49"),
        "heloc/heloc_test.csv": (269020, "56a00b4f7b96bf1020a8d05d3b61ea3a4bc6fe637376c0b929dceb3f319a0e58"),
        "heloc/heloc_train.csv": (805617, "92187da9daab7d1b074192d45d29fd3c1aca1f3cac8f37800780310ea7cf2b36"),
    },
    "planetoid": {
        "ind.citeseer.allx": (595021, "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668"),
        "ind.citeseer.ally": (55623, "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95"),
        "ind.citeseer.graph": (61987, "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7"),
        "ind.citeseer.test.index": (5000, "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4"),
        "ind.citeseer.tx": (260321, "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21"),
        "ind.citeseer.ty": (24135, "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce"),
        "ind.citeseer.x": (31087, "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6"),
        "ind.citeseer.y": (3014, "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924"),
        "ind.cora.allx": (257305, "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543"),
        "ind.cora.ally": (47959, "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71"),
        "ind.cora.graph": (59847, "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d"),
        "ind.cora.test.index": (5000, "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875"),
        "ind.cora.tx": (148025, "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a"),
        "ind.cora.ty": (28135, "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad"),
        "ind.cora.x": (22119, "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab"),
        "ind.cora.y": (4054, "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1"),
        "ind.pubmed.ally": (224739, "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e"),
        "ind.pubmed.graph": (471808, "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9"),
        "ind.pubmed.test.index": (6000, "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5"),
        "ind.pubmed.tx": (405505, "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d"),
        "ind.pubmed.ty": (12135, "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd"),
        "ind.pubmed.x": (23172, "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33"),
        "ind.pubmed.y": (854, "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3"),
    },
    "prognn": {
        "citeseer.npz": (1418528, "36e9a5bbe84eaa0c3c6b226f8b27450bb79246a5df22c375b3bacddb856efa8e"),
        "citeseer_meta_adj_0.05.npz": (18240, "8d27840b7ead85ed90260d54a6f4ff65740d869e1203017111c7fa9ef355242f"),
        "citeseer_meta_adj_0.1.npz": (18987, "5c333f8c92267ccd6f08ec27c421e9f0a17d9dda58729c93c7c823794c7c23f3"),
        "citeseer_meta_adj_0.15.npz": (19588, "69069c65343fc75c7b508bd97263a1a2d96212f62e72259ce34c4146f6db866d"),
        "citeseer_meta_adj_0.2.npz": (20379, "599e1fb14330bb5451216a5cebe7987840ecfa6a2d41004088f616e8653e9f5a"),
        "citeseer_meta_adj_0.25.npz": (21027, "63ff4f587683c93f36ff9ef987b9efad36260af5407bdf1a4175359dfb25ce91"),
        "citeseer_prognn_splits.json": (11587, "12ab5787371b8826691d0c6f33ba7c250dff2754a0f571578bc83920594bb9a3"),
        "cora.npz": (711224, "398a5c8f949a4f2a3c8fb248f777d2756c654de714762d6a18c04eaa19a96271"),
        "cora_meta_adj_0.05.npz": (24290, "bfb6ed914acbae726906ff0aa09b5ae70713849dcc637d8f08eeb27c0ef24c1f"),
        "cora_meta_adj_0.1.npz": (25346, "fbb6b1485cdfa93ae23501f950b43f4dc96eb09099f5fec3d67b93a92394dbd7"),
        "cora_meta_adj_0.15.npz": (26307, "f22e02303c239ba236acf3c214e4ff8e2539d68992737e2d909d02a96eabfc88"),
        "cora_meta_adj_0.2.npz": (27291, "adbe44b4014bc183525d8f55f2173c091fad9cc5c97e01a08a423ee6ceea8caa"),
        "cora_meta_adj_0.25.npz": (28158, "2e0e4eb2293a48f9a54c612bb1ac36b7ef4e643626acf4c159792b2cb6b534d8"),
        "cora_prognn_splits.json": (13836, "40a3e7e4025c349095d425c597a9db53b2ddd2437f0d5ccf7b46417d912f1db0"),
        "polblogs.npz": (171030, "cd0983c2b1caa3bbe2703a4e316f97bb1dccd33f98800d3d8e4bbe51cc86941b"),
        "polblogs_meta_adj_0.05.npz": (46562, "dc707f19ed4d3e5ad18c309de49a84ab5b2eb1491d6054bec900c8ad5bf0662c"),
        "polblogs_meta_adj_0.1.npz": (47858, "ac9b5d6566783a9b5c28b4a9fb30174779c1e1c4c3fc9f4060c68084ef04f40c"),
        "polblogs_meta_adj_0.15.npz": (48442, "db13407a6b283cbc2d428d598019e2dd66e09330589183c4ab34e2203ee43ad0"),
        "polblogs_meta_adj_0.2.npz": (47180, "7b5cb695d7680ffb65f3c5af831513a47453bcdc5b99bb6618be904965497b5b"),
        "polblogs_meta_adj_0.25.npz": (46716, "855b846a97b0b85515ab36cd4c5a6f15b5e9ec91a76a1946d157fee7b2272a78"),
        "polblogs_prognn_splits.json": (6264, "06e04855543c9b35fc5d172d1488d12834c8f8d75350616930b9b306be4db296"),
    },
    "heterophily": {
        "geom_gcn/new_data/cornell/out1_graph_edges.txt": (2001, "c4522a00cc40873c8a04a3a07c49e24a48a507eb284ac9c9f2d3e0590351bbb7"),
        "geom_gcn/new_data/cornell/out1_node_feature_label.txt": (624308, "cf5a3ca346cdd1210b8342e22517fcbbdae658065b7a3145f59350e50e6236a3"),
        "geom_gcn/new_data/cornell_corrected/out1_graph_edges.txt": (1989, "12dc60defc4f8a1f18499e3695bfd62ef0421f9b722297276e7f02dec7ae3dca"),
        "geom_gcn/new_data/cornell_corrected/out1_node_feature_label.txt": (624308, "38561ad44e29199a826ccef7f94f469b94a912076f83fbc453a69b8ac2b4b858"),
        "geom_gcn/new_data/film/out1_graph_edges.txt": (323820, "997cdce67ea9c29257d3ffe796328391931901cf823830affa453178b60e2c3e"),
        "geom_gcn/new_data/film/out1_node_feature_label.txt": (207718, "1d5cdd094f8b91e770f6decfca85b35cf42f75d1efb51055fd6af16e11820ff8"),
        "geom_gcn/new_data/texas/out1_graph_edges.txt": (2172, "0fe85183243a78cbee9b85a684f8240963d04d1020d10e9cd2b8cfb25e33b476"),
        "geom_gcn/new_data/texas/out1_node_feature_label.txt": (624308, "cf5a3ca346cdd1210b8342e22517fcbbdae658065b7a3145f59350e50e6236a3"),
        "geom_gcn/new_data/wisconsin/out1_graph_edges.txt": (3606, "ebd213511c88fce1eda450c2f920600c4b8cbb38f02384856bcc47c6ec1807ae"),
        "geom_gcn/new_data/wisconsin/out1_node_feature_label.txt": (856324, "a32b0aa38d42f0d36841e8a8cb646d197f0ff33a182ac75a2b4476aeed3c7e4b"),
        "geom_gcn/splits/cornell_split_0.6_0.2_0.npz": (704, "14022a1e19ec7fc0a07a2c06a785a2f9dc52809dbcd1c14fc318f7800675d73f"),
        "geom_gcn/splits/cornell_split_0.6_0.2_1.npz": (700, "5568fa27e968a724c92211bf97026a36a08893cf94b218043e49b4c973c35cfb"),
        "geom_gcn/splits/cornell_split_0.6_0.2_2.npz": (695, "763fc1f423395e4172617fa5b6bc0d7adad2241e5fedd1a4f0a098a67f9dc8e9"),
        "geom_gcn/splits/cornell_split_0.6_0.2_3.npz": (701, "4334321cd9ec42de9d51107fb9a6dc310512e0921bc1cff0f390301ee37315fa"),
        "geom_gcn/splits/cornell_split_0.6_0.2_4.npz": (759, "2b6b3ef396f4dc7fcdc276fb16b88bb87409b25879dd672b3a506eca844dd8d7"),
        "geom_gcn/splits/cornell_split_0.6_0.2_5.npz": (754, "1a40ef8b20aa9e1aa850e1abdaba3efac1f66c98ef2c6a59eadefa21136ece6b"),
        "geom_gcn/splits/cornell_split_0.6_0.2_6.npz": (758, "bcddf4ab59eae4c7d47b8a6cec9025a54ec0e6d3f3bdcd7678e201f25ace4642"),
        "geom_gcn/splits/cornell_split_0.6_0.2_7.npz": (693, "2b497e12dfc123d7e7c9bb4fc4a82b5bee18409e109a3e3a04da439cacec964d"),
        "geom_gcn/splits/cornell_split_0.6_0.2_8.npz": (701, "5c4e110d252d7ad156b2e4cd34b6dbd1cecbcc1755f8d72e932cc2a54f2b643c"),
        "geom_gcn/splits/cornell_split_0.6_0.2_9.npz": (704, "80f1531807194d301affbf6f879a4ab4f56a19bdccb62d192e3ecd1b5275f052"),
        "geom_gcn/splits/film_split_0.6_0.2_0.npz": (4214, "4505a41d4e90abd94d1ec22571ce528b09ad7cf20d87f764aebd4177590767f5"),
        "geom_gcn/splits/film_split_0.6_0.2_1.npz": (4231, "1871b0d24e3977c41e378fd24acc8025b63f86b77739be77a5b558d1287f207d"),
        "geom_gcn/splits/film_split_0.6_0.2_2.npz": (4224, "d26680e911ef3ecc9fc2a26d90c9d35028c63aadd7a5aea774649d1496c282cb"),
        "geom_gcn/splits/film_split_0.6_0.2_3.npz": (4207, "6755ad5f6a0be8594b344af3d2261eed935b83b73c4d70136e1a7beea7f78cb0"),
        "geom_gcn/splits/film_split_0.6_0.2_4.npz": (4233, "328fdca62b25074f21f2922518e042f24b3b8a1fc378f9dfb2cae36439aed902"),
        "geom_gcn/splits/film_split_0.6_0.2_5.npz": (4224, "5b3161a8dc8de4b2e651ebd56d68e768d1377044895b325566117fe26ab81cb7"),
        "geom_gcn/splits/film_split_0.6_0.2_6.npz": (4221, "e251b38abd4d7931b5e9ae5aba99dcdf87f0be283bdf6e65421274a1c9ef1df6"),
        "geom_gcn/splits/film_split_0.6_0.2_7.npz": (4205, "12164ef9f5620a2f12a387f4f2b8636859d42201101d6d32829ade62d5a98326"),
        "geom_gcn/splits/film_split_0.6_0.2_8.npz": (4217, "405cd1f7f631f678119f8bf2405809e86614d532985beb59566fcf95abd35b3f"),
        "geom_gcn/splits/film_split_0.6_0.2_9.npz": (4208, "505691c5d41bb37b20d085415dcdde2e8e68b5bc4e1feb2c0e361308002012bb"),
        "geom_gcn/splits/texas_split_0.6_0.2_0.npz": (698, "7ba77bf7a8856fcc0ab15623a611b8cdce994e820f577da914123fb4f45272b0"),
        "geom_gcn/splits/texas_split_0.6_0.2_1.npz": (701, "21cc244a96e3c51ad7993afb4dd227f90e467d82b964bb42d7d9fc500a6ef87f"),
        "geom_gcn/splits/texas_split_0.6_0.2_2.npz": (756, "b9e96a699ccf3a4c31ffbd03e52b25570889833425d20fa44e06c37b327cf61e"),
        "geom_gcn/splits/texas_split_0.6_0.2_3.npz": (759, "1a7deeb1285009789d5e6045d7e39f7d019c9223d9a75a2b7ce5e26d33b51f63"),
        "geom_gcn/splits/texas_split_0.6_0.2_4.npz": (702, "b5419ff3fe31adcae66fdb085d4f47d0b188e9436ab59f438632af969aafc674"),
        "geom_gcn/splits/texas_split_0.6_0.2_5.npz": (691, "68405fd1b9ff6105d99717220ecbd198785e338bf4a73abee722bbc9703d2667"),
        "geom_gcn/splits/texas_split_0.6_0.2_6.npz": (756, "8ad78b973164e70e5ac0d282e79adcbc6006e373909fbdfd72a13131e09040b8"),
        "geom_gcn/splits/texas_split_0.6_0.2_7.npz": (693, "a84bcbf997365bddf5fdf72ed49dc7e435e475f8c6210f8cdee7c8581a2bd6df"),
        "geom_gcn/splits/texas_split_0.6_0.2_8.npz": (762, "65ba65f296f91d40d2d7d3c9369b67415094a7e254c6eee48cd6d6531c586fdf"),
        "geom_gcn/splits/texas_split_0.6_0.2_9.npz": (693, "4306981d654ad8835c000c1f73fb6c1e60dfe99e26c13a6073f3b0f4cc3ce6ee"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_0.npz": (805, "f66f641e191d35d491cd3b63d6c2cd93c4b436da398984b44c19a8d4d7e7b1a5"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_1.npz": (739, "534aeb97266bd5a85a8587adf8eebad3f2e001c1240610f24b62c0ad0c2466ee"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_2.npz": (747, "047a5b641778ec3a4c76055fd7f18ecb2424c0952f20dfff7e1b17749d8acbdd"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_3.npz": (810, "706c27b4c51d046c0316f1e915f093e4a1fff48b3436b3e7c421eab596a99e77"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_4.npz": (812, "7ee813605eec086457aaff022cf3837f2f893fcf8bd37e3a8d2ff0c80e4c4f87"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_5.npz": (749, "8094ac2bdaf2cbea8f7a48df66a0800c809b2fd5942740e6b0441b660d3a0dd5"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_6.npz": (735, "c423a8deea9b18f9ecb6cfd703578e2159df167de01fe7e6195b88995010252d"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_7.npz": (733, "57ad808c8d4dd94dc4404124370bbcebb3dcc597c2bea6457bf05f220adf1527"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_8.npz": (741, "27d4d62a2a6aea2cdc399302237512ab0d64fb0c84e648112f97c5896274e42f"),
        "geom_gcn/splits/wisconsin_split_0.6_0.2_9.npz": (744, "3c149cd124a19021031609e0d7743a7be59aae4f88c8d38410138e8f06f5daaf"),
        "platonov2023/chameleon.npz": (177840, "4c640bd2877fc4f9f101531e2f977bc16445a54e09a5cb01178df608e552f3fd"),
        "platonov2023/chameleon_filtered.npz": (58924, "bf46f07e1fb5249280447e5fe3100f3e82fc4b93ad1e13ffcfdec924b6ac0bb5"),
    },
}

_DESCRIPTIONS = {
    "mnist": "MNIST digits, 60000 + 10000 28x28 uint8 images (original IDX .gz files)",
    "fashion_mnist": "Fashion-MNIST, 60000 + 10000 28x28 uint8 images, 10 classes (original IDX .gz files)",
    "omniglot": "Omniglot, 1623 characters x 20 drawers, 105x105 binary images, Vinyals split lists",
    "tinyshakespeare": "tiny Shakespeare, 1,115,394 characters, 65-character vocabulary",
    "sachs": "Sachs et al. 2005 flow cytometry (cd3cd28, 853 x 11) + 17-edge consensus graph",
    "credit": "German Credit (UCI Statlog, 1000 x 20) and HELOC (CARLA version, 9871 x 21)",
    "planetoid": "Planetoid citation graphs Cora / CiteSeer / PubMed (PubMed allx absent)",
    "prognn": "Pro-GNN Cora / CiteSeer / Polblogs LCC graphs, fixed splits, Metattack graphs at 5-25 %",
    "heterophily": "Geom-GCN Texas / Cornell / Wisconsin / Actor with 10 splits; Platonov et al. Chameleon",
}

_SOURCES = {
    "mnist": ("https://github.com/fgnt/mnist (mirror of http://yann.lecun.com/exdb/mnist/)",),
    "fashion_mnist": ("https://github.com/zalandoresearch/fashion-mnist (data/fashion/)",),
    "omniglot": (
        "https://github.com/brendenlake/omniglot",
        "https://github.com/bitsandscraps/omniglot (npz conversion)",
        "https://github.com/jakesnell/prototypical-networks (data/omniglot/splits/vinyals/)",
    ),
    "tinyshakespeare": ("https://github.com/karpathy/char-rnn (data/tinyshakespeare/input.txt)",),
    "sachs": (
        "https://github.com/vahidzee/ocdaf (ocd/data/real_world/sachs_cd3cd28.csv)",
        "https://github.com/cmu-phil/example-causal-datasets (real/sachs/)",
    ),
    "credit": (
        "https://doi.org/10.24432/C5NC77 (UCI Statlog German Credit)",
        "https://github.com/carla-recourse/cf-data (heloc_train.csv, heloc_test.csv)",
    ),
    "planetoid": ("https://github.com/kimiyoung/planetoid (data/)",),
    "prognn": (
        "https://github.com/danielzuegner/gnn-meta-attack (data/)",
        "https://github.com/ChandlerBang/Pro-GNN (splits/, meta/)",
    ),
    "heterophily": (
        "https://github.com/graphdml-uiuc-jlu/geom-gcn (new_data/, splits/)",
        "https://github.com/yandex-research/heterophilous-graphs (data/)",
    ),
}

# ind.pubmed.allx is not shipped (see planetoid/SOURCE.md); only its git blob id is known.
_OPTIONAL_FILES = {
    "planetoid": {"ind.pubmed.allx": ("git-blob-sha1", "3b86bccf08111c37c632a9dd8ab63db25ea76361")},
}

DATASETS: dict[str, DatasetInfo] = {
    name: DatasetInfo(name, _DESCRIPTIONS[name], _SOURCES[name], files, _OPTIONAL_FILES.get(name, {}))
    for name, files in _FILES.items()
}

_VERIFIED: set[tuple[str, int, int, str]] = set()


def check_choice(argument: str, value: Any, allowed: Sequence[Any]) -> None:
  """Raises ``ValueError`` (or ``TypeError`` for a wrong type) unless ``value`` is one of ``allowed``."""
  kinds = {type(a) for a in allowed}
  if isinstance(value, bool) and bool not in kinds:
    raise TypeError(f"{argument} must be one of {tuple(allowed)}, got the bool {value!r}")
  if str in kinds and not isinstance(value, str):
    raise TypeError(f"{argument} must be a str, one of {tuple(allowed)}; got {type(value).__name__} {value!r}")
  if value not in allowed:
    raise ValueError(f"{argument} must be one of {tuple(allowed)}, got {value!r}")


def candidate_roots(data_dir: PathLike | None = None) -> list[tuple[Path, str]]:
  """The data roots searched, in order, each with a short note on where it came from."""
  if data_dir is not None:
    if not isinstance(data_dir, (str, os.PathLike)):
      raise TypeError(f"data_dir must be a str, an os.PathLike or None, got {type(data_dir).__name__}")
    return [(Path(data_dir).expanduser(), "data_dir argument")]
  roots = []
  env = os.environ.get(ENV_VAR, "")
  if env:
    roots.append((Path(env).expanduser(), f"${ENV_VAR}"))
  roots.append((Path(jaxgen.__file__).resolve().parents[2] / "shared" / "data", "shared/data beside the repository"))
  roots.append((Path.cwd().parent / "shared" / "data", "shared/data in the parent of the working directory"))
  unique, seen = [], set()
  for root, why in roots:
    key = os.path.normcase(os.path.abspath(root))
    if key not in seen:
      seen.add(key)
      unique.append((root, why))
  return unique


def data_root(data_dir: PathLike | None = None) -> Path:
  """The first searched data root that exists and holds at least one known dataset folder.

  Datasets are resolved one by one (see the module docstring), so a dataset may still come from a later root;
  use this for messages and for copying data, and ``find_dataset_dir`` semantics for loading.

  Raises:
    FileNotFoundError: no candidate root holds any dataset (the message lists the roots searched).
  """
  roots = candidate_roots(data_dir)
  for root, _ in roots:
    if any((root / name).is_dir() for name in DATASETS):
      return root
  searched = "; ".join(f"{root} ({why})" for root, why in roots)
  raise FileNotFoundError(
      f"No data root with any of the datasets {tuple(DATASETS)} was found. Directories searched: {searched}. "
      f"Set ${ENV_VAR} to the folder that contains them, or place them at ../shared/data/ beside the repository."
  )


def _info(name: str) -> DatasetInfo:
  if name not in DATASETS:
    raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {name!r}")
  return DATASETS[name]


def _searched(name: str, roots: Iterable[tuple[Path, str]]) -> str:
  return "; ".join(f"{root / name} ({why})" for root, why in roots)


def _how_to_supply(info: DatasetInfo) -> str:
  return (
      f"To supply it, set ${ENV_VAR} to a folder that contains '{info.name}/', pass data_dir=..., or place the "
      f"folder at ../shared/data/{info.name}/ beside the repository. Canonical source: {'; '.join(info.sources)} "
      f"(see {info.name}/SOURCE.md for the exact commit, files and sha256 sums)."
  )


def _find_dataset_dir(name: str, data_dir: PathLike | None) -> tuple[Path | None, list[tuple[Path, str]]]:
  roots = candidate_roots(data_dir)
  for root, _ in roots:
    if (root / name).is_dir():
      return root / name, roots
  return None, roots


def find_dataset_dir(name: str, data_dir: PathLike | None = None) -> Path:
  """The folder of dataset ``name``; ``FileNotFoundError`` (naming every directory searched) if none exists."""
  info = _info(name)
  folder, roots = _find_dataset_dir(name, data_dir)
  if folder is None:
    raise FileNotFoundError(
        f"Dataset '{name}' not found. Directories searched: {_searched(name, roots)}. {_how_to_supply(info)}"
    )
  return folder


def sha256_file(path: PathLike) -> str:
  """Hex sha256 of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def git_blob_sha1(path: PathLike) -> str:
  """Hex git blob id of a file (``git hash-object``): sha1 of ``b"blob <size>\\0" + content``."""
  digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _cache_key(path: Path, expected: str) -> tuple[str, int, int, str]:
  st = path.stat()
  return (str(path.resolve()), st.st_mtime_ns, st.st_size, expected)


def _mismatch(name: str, relpath: str, path: Path, *, use_cache: bool) -> str | None:
  """``None`` if ``path`` has the registered size and digest, else a sentence naming the file and both hashes."""
  info = DATASETS[name]
  if relpath in info.files:
    size, expected = info.files[relpath]
    kind, hash_fn = "sha256", sha256_file
  else:
    kind, expected = info.optional_files[relpath]
    size, hash_fn = None, git_blob_sha1
  key = _cache_key(path, expected)
  if use_cache and key in _VERIFIED:
    return None
  actual = hash_fn(path)
  actual_size = key[2]
  if actual == expected and (size is None or actual_size == size):
    _VERIFIED.add(key)
    return None
  size_note = f" (size {actual_size} bytes, expected {size})" if size is not None and actual_size != size else ""
  return (
      f"Dataset '{name}': file '{relpath}' at {path} failed {kind} verification{size_note}: expected {expected}, "
      f"got {actual}"
  )


def _check(name: str, relpath: str, path: Path) -> None:
  """Raises ``ValueError`` unless ``path`` has the registered size and digest (cached per path, mtime, size)."""
  problem = _mismatch(name, relpath, path, use_cache=True)
  if problem is not None:
    raise ValueError(
        f"{problem}. The file is corrupt or a different version; nothing was parsed. Replace it with the original "
        f"from {'; '.join(DATASETS[name].sources)} (see {name}/SOURCE.md)."
    )


def dataset_files(name: str, relpaths: Iterable[str], data_dir: PathLike | None = None) -> dict[str, Path]:
  """Resolves dataset ``name``, checks that every file in ``relpaths`` exists and verifies all of them.

  Every file is verified before this returns, so a loader that parses only what this returns never touches an
  unverified byte.

  Returns:
    ``{relpath: absolute Path}`` for every requested file.

  Raises:
    FileNotFoundError: the dataset folder or one of the files is missing (the message names the directories
      searched, the missing file and how to supply it).
    ValueError: a file's size or sha256 differs from the registered value (message names dataset, file, both hashes).
  """
  info = _info(name)
  relpaths = list(relpaths)
  for relpath in relpaths:
    if relpath not in info.files and relpath not in info.optional_files:
      raise ValueError(f"'{relpath}' is not a registered file of dataset '{name}'")
  folder, roots = _find_dataset_dir(name, data_dir)
  if folder is None:
    missing = relpaths[0] if relpaths else "(any file)"
    raise FileNotFoundError(
        f"Dataset '{name}' not found (needed file '{missing}'). Directories searched: {_searched(name, roots)}. "
        f"{_how_to_supply(info)}"
    )
  paths = {relpath: folder / relpath for relpath in relpaths}
  for relpath, path in paths.items():
    if not path.is_file():
      raise FileNotFoundError(
          f"Dataset '{name}': file '{relpath}' is missing from {folder}. Directories searched: "
          f"{_searched(name, roots)}. {_how_to_supply(info)}"
      )
  for relpath, path in paths.items():
    _check(name, relpath, path)
  return paths


def optional_dataset_file(name: str, relpath: str, data_dir: PathLike | None = None) -> Path | None:
  """Path of a registered optional file if it is present (and verified), else ``None``."""
  info = _info(name)
  if relpath not in info.optional_files:
    raise ValueError(f"'{relpath}' is not a registered optional file of dataset '{name}'")
  folder, _ = _find_dataset_dir(name, data_dir)
  if folder is None or not (folder / relpath).is_file():
    return None
  _check(name, relpath, folder / relpath)
  return folder / relpath


def list_datasets(data_dir: PathLike | None = None) -> list[dict[str, Any]]:
  """Lists the shipped datasets without hashing anything.

  Args:
    data_dir: data root to use instead of the default search (``$JAXGEN_DATA``, then ``../shared/data``).

  Returns:
    One dict per dataset, in a fixed order, with keys ``name`` (folder name), ``files`` (number of registered
    files), ``size_bytes`` (their expected total size), ``present`` (the folder was found and every registered file
    exists), ``path`` (the resolved folder as a str, or ``None``), ``missing_files`` (registered files not found)
    and ``description``.
  """
  out = []
  for name, info in DATASETS.items():
    folder, _ = _find_dataset_dir(name, data_dir)
    missing = list(info.files) if folder is None else [p for p in info.files if not (folder / p).is_file()]
    out.append({
        "name": name,
        "files": len(info.files),
        "size_bytes": sum(size for size, _ in info.files.values()),
        "present": folder is not None and not missing,
        "path": None if folder is None else str(folder),
        "missing_files": missing,
        "description": info.description,
    })
  return out


def verify_datasets(data_dir: PathLike | None = None) -> list[dict[str, Any]]:
  """Re-hashes every registered file of every dataset found (no cache) and reports per dataset.

  Args:
    data_dir: data root to use instead of the default search.

  Returns:
    One dict per dataset with keys ``name``, ``status`` and ``detail``. ``status`` is ``"ok"`` (every file present
    with the registered size and sha256), ``"corrupt"`` (at least one file has a different size or hash; ``detail``
    names each such file with both hashes, and any missing files) or ``"missing"`` (the folder or some files are
    absent; ``detail`` names the directories searched or the missing files). Also ``path`` (resolved folder or
    ``None``) and ``corrupt_files`` / ``missing_files`` (lists of relative paths).
  """
  out = []
  for name, info in DATASETS.items():
    folder, roots = _find_dataset_dir(name, data_dir)
    if folder is None:
      out.append({
          "name": name, "status": "missing", "path": None, "corrupt_files": [], "missing_files": list(info.files),
          "detail": f"folder not found; searched {_searched(name, roots)}",
      })
      continue
    corrupt, missing, notes = [], [], []
    for relpath in list(info.files) + list(info.optional_files):
      path = folder / relpath
      if not path.is_file():
        if relpath in info.files:
          missing.append(relpath)
        continue
      problem = _mismatch(name, relpath, path, use_cache=False)
      if problem is not None:
        corrupt.append(relpath)
        notes.append(problem)
    if missing:
      notes.append(f"missing: {', '.join(missing)}")
    status = "corrupt" if corrupt else "missing" if missing else "ok"
    detail = "; ".join(notes) if notes else f"{len(info.files)} files verified in {folder}"
    out.append({
        "name": name, "status": status, "path": str(folder), "corrupt_files": corrupt, "missing_files": missing,
        "detail": detail,
    })
  return out
